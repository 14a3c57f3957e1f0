// Decides whether Buildkite's agent list shows a given unit's agent as registered since
// the unit last started. Pure: no network, no clock; the caller supplies the list, the
// unit's start time and the clock skew it tolerates between the host and Buildkite.
import Foundation

public enum RegistrationMatch {
    /// The connected entry with this agent name and host name created after `startedAfter`
    /// minus `skew`; the newest one when several qualify.
    ///
    /// An entry is passed over when any of these holds:
    /// 1. it is not `connected` (a `disconnected` or `lost` entry is an earlier run; a
    ///    `never_connected` one registered but has not connected yet);
    /// 2. its name or host name differs (host names compare case-insensitively);
    /// 3. it was created before the unit's start: a leftover of the previous start that
    ///    Buildkite has not marked lost yet.
    public static func find(in agents: [BuildkiteAgent], name: String, hostname: String,
                            startedAfter: Date, skew: TimeInterval) -> BuildkiteAgent? {
        let earliest = startedAfter.addingTimeInterval(-abs(skew))
        let host = hostname.lowercased()
        return agents
            .filter {
                $0.isConnected && $0.name == name && $0.hostname.lowercased() == host
                    && $0.createdAt >= earliest
            }
            .max { $0.createdAt < $1.createdAt }
    }

    /// Why `find` came back empty, for the verify report: what Buildkite does list under
    /// this name and host, e.g. `Buildkite lists 2 older entries (newest: lost, created
    /// 2024-05-01T10:00:00Z) but none connected since the unit started`.
    public static func explainMiss(in agents: [BuildkiteAgent], name: String,
                                   hostname: String, startedAfter: Date,
                                   skew: TimeInterval) -> String {
        let host = hostname.lowercased()
        let same = agents.filter { $0.name == name && $0.hostname.lowercased() == host }
        guard let newest = same.max(by: { $0.createdAt < $1.createdAt }) else {
            let elsewhere = agents.filter { $0.name == name }.map(\.hostname)
            if let other = elsewhere.first {
                return "Buildkite lists agent \"\(name)\" only on host \"\(other)\", not "
                    + "\"\(hostname)\"; check the host's hostname"
            }
            return "Buildkite does not list agent \"\(name)\" on host \"\(hostname)\" yet"
        }
        let created = newest.createdAt.formatted(.iso8601)
        let fresh = newest.createdAt >= startedAfter.addingTimeInterval(-abs(skew))
        if fresh {
            return "Buildkite lists agent \"\(name)\" on \"\(hostname)\" as "
                + "\(newest.connectionState) (registered \(created)), not connected"
        }
        let count = same.count == 1 ? "1 entry" : "\(same.count) entries"
        return "Buildkite lists \(count) for agent \"\(name)\" on \"\(hostname)\", all "
            + "registered before the unit started (newest: \(newest.connectionState), "
            + "\(created))"
    }
}
