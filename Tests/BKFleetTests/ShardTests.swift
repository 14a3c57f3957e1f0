// `--shard K/N`: every host lands in exactly one shard, the split survives fleet growth,
// and Buildkite's parallel-job variables supply the default.
import Foundation
import XCTest
@testable import BKFleet

final class ShardTests: XCTestCase {
    let names = (1...300).map { String(format: "builder-%03d", $0) }

    func hosts(_ names: [String]) -> [BKFleet.Host] { names.map { ScaleFixtures.host($0) } }

    func message(_ body: () throws -> Any?) -> String {
        do {
            return "no error: \(String(describing: try body()))"
        } catch {
            return "\(error)"
        }
    }

    func testParsing() throws {
        XCTAssertEqual(try Shard(parsing: "1/4"), try Shard(index: 1, count: 4))
        XCTAssertEqual(try Shard(parsing: "0/1").count, 1)
        XCTAssertTrue(message { try Shard(parsing: "4/4") }.contains("must be 0...3"))
        XCTAssertTrue(message { try Shard(parsing: "-1/4") }.contains("must be 0...3"))
        XCTAssertTrue(message { try Shard(parsing: "0/0") }.contains("at least 1"))
        XCTAssertTrue(message { try Shard(parsing: "1") }.contains("wants K/N"))
        XCTAssertTrue(message { try Shard(parsing: "1/2/3") }.contains("wants K/N"))
    }

    func testEveryHostInExactlyOneShardAndShardsAreEven() throws {
        let all = hosts(names)
        var seen: [String: Int] = [:]
        for k in 0..<5 {
            let part = try Shard(index: k, count: 5).select(all)
            // About 60 each; a skewed hash would leave some agents idle.
            XCTAssertTrue((35...85).contains(part.count), "shard \(k): \(part.count)")
            // Inventory order is kept within a shard.
            XCTAssertEqual(part.map(\.name), part.map(\.name).sorted())
            for host in part { seen[host.name, default: 0] += 1 }
        }
        XCTAssertEqual(seen.count, names.count)
        XCTAssertEqual(Set(seen.values), [1])
    }

    func testAddingHostsMovesNoOtherHost() {
        let before = Dictionary(uniqueKeysWithValues: names.map {
            ($0, Shard.owner(of: $0, count: 4)) })
        // A shard's choice depends on the name alone, so new hosts only add to shards.
        for name in names + ["mac-01", "mac-02"] where before[name] != nil {
            XCTAssertEqual(Shard.owner(of: name, count: 4), before[name], name)
        }
    }

    func testAddingAShardMovesAboutOneInNPlusOneAndOnlyToTheNewShard() {
        var moved = 0
        for name in names {
            let old = Shard.owner(of: name, count: 4)
            let new = Shard.owner(of: name, count: 5)
            if old != new {
                moved += 1
                XCTAssertEqual(new, 4, "\(name) moved between old shards")
            }
        }
        // 300 / 5 = 60 expected; a modulo split would move about 240.
        XCTAssertTrue((35...85).contains(moved), "moved \(moved)")
    }

    func testAssignmentIsPinnedAcrossReleases() {
        // Agents of one pipeline may run different bkfleet builds; they must agree.
        let owners = ["builder-01", "builder-03", "builder-05", "mac-01"].map {
            Shard.owner(of: $0, count: 4)
        }
        XCTAssertEqual(owners, ShardTests.pinned)
    }

    // Computed apart from bkfleet: SHA-256 of "K\0NAME", the first 8 bytes as a
    // big-endian number, highest K wins (docs/fleet-scale.md).
    static let pinned = [2, 3, 0, 2]

    func testBuildkiteVariablesAreTheDefault() throws {
        let env = ["BUILDKITE_PARALLEL_JOB": "2", "BUILDKITE_PARALLEL_JOB_COUNT": "4"]
        XCTAssertEqual(try Shard.resolve(option: nil, environment: env),
                       try Shard(index: 2, count: 4))
        XCTAssertEqual(try Shard.resolve(option: "0/1", environment: env),
                       try Shard(index: 0, count: 1), "--shard wins over the variables")
        XCTAssertNil(try Shard.resolve(option: nil, environment: [:]))
        XCTAssertNil(try Shard.resolve(option: nil,
                                       environment: ["BUILDKITE_PARALLEL_JOB": "2"]))
    }

    func testBadBuildkiteVariablesAreNamed() {
        let outOfRange = message {
            try Shard.fromEnvironment(["BUILDKITE_PARALLEL_JOB": "4",
                                       "BUILDKITE_PARALLEL_JOB_COUNT": "4"])
        }
        XCTAssertTrue(outOfRange.contains("BUILDKITE_PARALLEL_JOB=4 does not fit "
                                          + "BUILDKITE_PARALLEL_JOB_COUNT=4"), outOfRange)
        let garbage = message {
            try Shard.fromEnvironment(["BUILDKITE_PARALLEL_JOB": "one",
                                       "BUILDKITE_PARALLEL_JOB_COUNT": "4"])
        }
        XCTAssertTrue(garbage.contains("BUILDKITE_PARALLEL_JOB='one' is not a whole number"),
                      garbage)
        XCTAssertFalse(garbage.contains("COUNT='4'"), "the good one is not blamed: \(garbage)")
    }
}
