// Plans the order in which a rotation restarts hosts: batches of at most `--batch` hosts,
// each chosen so that every queue (the agents' `queue` tag) keeps at least one agent that
// is not being restarted. Pure planning over names; it does not know whether an agent is
// really connected (an agent already down elsewhere is not seen here).
import Foundation

/// One agent unit a rotation restarts.
public struct RestartUnit: Sendable, Equatable {
    public var host: String
    public var agent: String
    public var queue: String?

    public init(host: String, agent: String, queue: String?) {
        self.host = host
        self.agent = agent
        self.queue = queue
    }
}

public struct QueueGapError: Error, CustomStringConvertible, Equatable {
    public var queue: String
    public var host: String

    public var description: String {
        "restarting \(host) would leave queue '\(queue)' with no connected agent: every agent"
            + " serving it runs there. Add an agent of that queue on another host, or rerun "
            + "with --allow-queue-gap to accept the gap"
    }
}

public enum RotationBatches {
    /// `hosts` in order, `units` the agents each restarts, `servers` every agent of each
    /// queue in the whole inventory as `host/agent`. Returns batches of host names.
    public static func plan(hosts: [String], units: [RestartUnit],
                            servers: [String: Set<String>], batchSize: Int?,
                            allowQueueGap: Bool) throws -> [[String]] {
        let size = max(1, batchSize ?? hosts.count)
        var down: [String: [String: Set<String>]] = [:]   // host -> queue -> agents
        for unit in units {
            guard let queue = unit.queue else { continue }
            down[unit.host, default: [:]][queue, default: []]
                .insert("\(unit.host)/\(unit.agent)")
        }
        var remaining = hosts
        var batches: [[String]] = []
        while !remaining.isEmpty {
            var batch: [String] = []
            var takenDown: [String: Set<String>] = [:]
            for host in remaining where batch.count < size {
                var trial = takenDown
                for (queue, agents) in down[host] ?? [:] {
                    trial[queue, default: []].formUnion(agents)
                }
                let gap = trial.first { queue, agents in
                    (servers[queue] ?? []).subtracting(agents).isEmpty
                }
                if gap == nil || allowQueueGap {
                    batch.append(host)
                    takenDown = trial
                } else if batch.isEmpty {
                    // Even alone this host takes a queue down.
                    throw QueueGapError(queue: gap!.key, host: host)
                }
            }
            batches.append(batch)
            remaining.removeAll { batch.contains($0) }
        }
        return batches
    }
}
