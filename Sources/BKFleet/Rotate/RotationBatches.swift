// Plans the order in which a rotation restarts hosts: batches of at most `--batch` hosts,
// each chosen so that every queue (the agents' `queue` tag) keeps at least one connected
// agent that is not being restarted. Pure planning over names: which agents are connected
// comes from one Buildkite agent listing the caller fetched; nothing here asks the network.
import Foundation

/// An agent on a host the rotation planned, with the name Buildkite lists it under.
public struct QueueMember: Sendable, Equatable {
    public var host: String
    public var agent: String
    /// The host's own name, as the probe read it.
    public var hostname: String
    /// The registered agent name, e.g. `builder-01-builder-1`.
    public var name: String

    public init(host: String, agent: String, hostname: String, name: String) {
        self.host = host
        self.agent = agent
        self.hostname = hostname
        self.name = name
    }
}

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
            + " Buildkite lists as connected for it runs there. Start or add an agent of that"
            + " queue on another host, or rerun "
            + "with --allow-queue-gap to accept the gap"
    }
}

public enum RotationBatches {
    /// The agents Buildkite lists as connected, per queue (their `queue=` tag): a known
    /// agent as `host/agent` (so a restart can take it down), any other (an agent bkfleet
    /// does not manage, or on a host outside the run) as `buildkite:ID`. An agent of the
    /// inventory that is not connected serves no queue, whatever the inventory says.
    public static func connectedServers(listing: [BuildkiteAgent],
                                        members: [QueueMember]) -> [String: Set<String>] {
        var servers: [String: Set<String>] = [:]
        for entry in listing where entry.isConnected {
            guard let tag = entry.metaData.first(where: { $0.hasPrefix("queue=") }) else {
                continue
            }
            let queue = String(tag.dropFirst("queue=".count))
            let member = members.first {
                $0.name == entry.name && $0.hostname.lowercased() == entry.hostname.lowercased()
            }
            servers[queue, default: []].insert(member.map { "\($0.host)/\($0.agent)" }
                                               ?? "buildkite:\(entry.id)")
        }
        return servers
    }

    /// `hosts` in order, `units` the agents each restarts, `servers` the agents serving
    /// each queue now (see `connectedServers`). Returns batches of host names.
    /// `allowQueueGap` accepts only the gaps no order can avoid (a queue whose every
    /// connected agent runs on one host); every other queue still keeps an agent up.
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
            var accepted: Set<String> = []   // queues whose gap is unavoidable and allowed
            for host in remaining where batch.count < size {
                var trial = takenDown
                for (queue, agents) in down[host] ?? [:] {
                    trial[queue, default: []].formUnion(agents)
                }
                // Queues this host takes down even when restarted alone.
                let alone = Set((down[host] ?? [:]).filter { queue, agents in
                    (servers[queue] ?? []).subtracting(agents).isEmpty
                }.keys)
                let allowed = allowQueueGap ? accepted.union(alone) : []
                let gap = trial.first { queue, agents in
                    (servers[queue] ?? []).subtracting(agents).isEmpty
                        && !allowed.contains(queue)
                }
                if gap == nil {
                    batch.append(host)
                    takenDown = trial
                    accepted = allowed
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
