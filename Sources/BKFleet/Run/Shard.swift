// `--shard K/N`: a stable 1/N of the selected hosts, so N bkfleet processes (e.g. a
// Buildkite step with `parallelism: N`) split one fleet without talking to each other.
// Chosen by rendezvous hashing of host names; it does not balance by host cost.
import Foundation

/// Shard `index` of `count`, counted from 0 as Buildkite counts parallel jobs.
public struct Shard: Sendable, Equatable, CustomStringConvertible {
    public var index: Int
    public var count: Int

    public init(index: Int, count: Int) throws {
        guard count >= 1 else {
            throw SelectionError(description: "--shard \(index)/\(count): the shard count "
                                 + "must be at least 1")
        }
        guard index >= 0, index < count else {
            throw SelectionError(description: "--shard \(index)/\(count): K counts from 0, "
                                 + "so it must be 0...\(count - 1)")
        }
        self.index = index
        self.count = count
    }

    /// `K/N`, e.g. `0/4`.
    public init(parsing text: String) throws {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2,
              let index = Int(parts[0].trimmingCharacters(in: .whitespaces)),
              let count = Int(parts[1].trimmingCharacters(in: .whitespaces)) else {
            throw SelectionError(description: "--shard wants K/N with whole numbers, K "
                                 + "counted from 0 (e.g. 0/4), not '\(text)'")
        }
        try self.init(index: index, count: count)
    }

    public var description: String { "\(index)/\(count)" }

    /// Buildkite's own split when a step has `parallelism`: both variables set.
    /// Nil when they are absent, so a plain run covers the whole selection.
    public static func fromEnvironment(_ environment: [String: String]) throws -> Shard? {
        let job = environment["BUILDKITE_PARALLEL_JOB"].flatMap { $0.isEmpty ? nil : $0 }
        let jobs = environment["BUILDKITE_PARALLEL_JOB_COUNT"].flatMap { $0.isEmpty ? nil : $0 }
        // LIMITATION: only one of the two set (never done by Buildkite itself) is taken as
        // "not sharded" rather than refused.
        guard let job, let jobs else { return nil }
        guard let index = Int(job), let count = Int(jobs) else {
            let bad = [("BUILDKITE_PARALLEL_JOB", job), ("BUILDKITE_PARALLEL_JOB_COUNT", jobs)]
                .filter { Int($0.1) == nil }.map { "\($0.0)='\($0.1)'" }
            throw SelectionError(description: bad.joined(separator: " and ")
                                 + (bad.count == 1 ? " is not a whole number" :
                                    " are not whole numbers")
                                 + "; unset both or pass --shard K/N")
        }
        do {
            return try Shard(index: index, count: count)
        } catch {
            throw SelectionError(description: "BUILDKITE_PARALLEL_JOB=\(job) does not fit "
                                 + "BUILDKITE_PARALLEL_JOB_COUNT=\(jobs) (the job counts from "
                                 + "0 and must be below the count); pass --shard K/N instead")
        }
    }

    /// `--shard` when given, else the Buildkite variables, else no sharding.
    public static func resolve(option: String?, environment: [String: String]) throws -> Shard? {
        if let option { return try Shard(parsing: option) }
        return try fromEnvironment(environment)
    }

    /// This shard's hosts, in their given order.
    public func select(_ hosts: [Host]) -> [Host] {
        hosts.filter { Shard.owner(of: $0.name, count: count) == index }
    }

    /// The shard that owns `name` among `count`: the one whose SHA-256 of
    /// `shard NUL name` is highest. A host's shard depends on its name and N alone, so
    /// adding or removing hosts moves no other host; going from N to N+1 shards moves
    /// only the hosts the new shard wins, about 1/(N+1) of them.
    public static func owner(of name: String, count: Int) -> Int {
        guard count > 1 else { return 0 }
        var best = 0
        var bestWeight: UInt64 = 0
        for shard in 0..<count {
            let weight = weight(name: name, shard: shard)
            if shard == 0 || weight > bestWeight {
                best = shard
                bestWeight = weight
            }
        }
        return best
    }

    static func weight(name: String, shard: Int) -> UInt64 {
        let hex = Digest.sha256Hex(Array("\(shard)\u{0}\(name)".utf8))
        return UInt64(hex.prefix(16), radix: 16) ?? 0
    }
}
