// `--on SELECTION`: which hosts names, globs, host tags, groups and agent tags pick, in
// inventory order, and the messages for terms that pick nothing. No hosts are contacted.
import Foundation
import XCTest
@testable import BKFleet

/// A small in-memory inventory shared by the selection, shard and batch tests.
enum ScaleFixtures {
    static let location = SourceLocation(file: "fleet.toml", line: 1, column: 1)

    static func host(_ name: String, agents: [String] = ["default"],
                     tags: [String: String] = [:], groups: [String] = []) -> BKFleet.Host {
        BKFleet.Host(name: name, address: "10.0.0.1", port: 22, user: "root", agents: agents,
             tags: tags, groups: groups, rebuildCommand: "nixos-rebuild switch",
             location: location)
    }

    static func inventory(_ hosts: [BKFleet.Host]) -> Inventory {
        let agents = [
            AgentProfile(name: "default", token: "default", tags: ["queue": "default"],
                         location: location),
            AgentProfile(name: "nix", token: "default", tags: ["queue": "nix", "os": "nixos"],
                         location: location),
        ]
        return Inventory(path: "/fleet/fleet.toml",
                         defaults: FleetDefaults(knownHosts: "/fleet/known_hosts"),
                         buildkite: nil, tokens: [:], sshKeys: [:],
                         agents: Dictionary(uniqueKeysWithValues: agents.map { ($0.name, $0) }),
                         hosts: hosts, contentHash: "")
    }

    /// builder-01..03 and mac-01 with a mix of tags, groups and agents.
    static let fleet = inventory([
        host("builder-01", agents: ["nix"], tags: ["rack": "a1"], groups: ["eu"]),
        host("builder-02", groups: ["us"]),
        host("builder-03", agents: ["default", "nix"], tags: ["rack": "b2"],
             groups: ["eu", "gpu"]),
        host("mac-01", tags: ["os": "darwin"]),
    ])
}

final class SelectionTests: XCTestCase {
    func names(_ selection: String) throws -> [String] {
        try HostSelection(parsing: selection).select(from: ScaleFixtures.fleet).map(\.name)
    }

    func error(_ selection: String) -> String {
        do {
            let chosen = try names(selection)
            return "selected \(chosen)"
        } catch let error as SelectionError {
            return error.description
        } catch {
            return "unexpected \(error)"
        }
    }

    func testNameSelectsOneHost() throws {
        XCTAssertEqual(try names("builder-02"), ["builder-02"])
    }

    func testGlobSelectsMatchingNamesInInventoryOrder() throws {
        XCTAssertEqual(try names("builder-*"), ["builder-01", "builder-02", "builder-03"])
        XCTAssertEqual(try names("*-0[13]"), ["builder-01", "builder-03", "mac-01"])
    }

    func testTermsUniteAndKeepInventoryOrder() throws {
        XCTAssertEqual(try names("mac-01, builder-01,builder-*"),
                       ["builder-01", "builder-02", "builder-03", "mac-01"])
    }

    func testHostTagWithGlobValue() throws {
        XCTAssertEqual(try names("@rack=a*"), ["builder-01"])
        XCTAssertEqual(try names("@os=darwin"), ["mac-01"])
    }

    func testGroup() throws {
        XCTAssertEqual(try names("@group=eu"), ["builder-01", "builder-03"])
        XCTAssertEqual(try names("@group=gpu,@group=us"), ["builder-02", "builder-03"])
    }

    func testAgentTagOfAnyAgentTheHostRuns() throws {
        XCTAssertEqual(try names("@queue=nix"), ["builder-01", "builder-03"])
        XCTAssertEqual(try names("@queue=default"), ["builder-02", "builder-03", "mac-01"])
        // A host tag and an agent tag with the same key both count.
        XCTAssertEqual(try names("@os=*"), ["builder-01", "builder-03", "mac-01"])
    }

    func testAgentProfileName() throws {
        XCTAssertEqual(try names("@agent=nix"), ["builder-01", "builder-03"])
    }

    func testUnknownNameIsNamedWithSuggestion() {
        let message = error("builder-1")
        XCTAssertTrue(message.contains("'builder-1' matches no host in /fleet/fleet.toml"),
                      message)
        XCTAssertTrue(message.contains("did you mean 'builder-01'?"), message)
    }

    func testOneDeadTermFailsTheWholeSelection() {
        let message = error("builder-*,linux-*")
        XCTAssertTrue(message.contains("'linux-*' matches no host"), message)
    }

    func testUnknownTagValueListsTheValuesInUse() {
        let message = error("@queue=gpu")
        XCTAssertTrue(message.contains("'@queue=gpu' matches no host"), message)
        XCTAssertTrue(message.contains("values of 'queue' in use: default, nix"), message)
        XCTAssertTrue(error("@colour=red").contains("no host tag, group or agent tag 'colour'"))
    }

    func testMalformedTerms() {
        XCTAssertTrue(error("builder-01,,mac-01").contains("has an empty term"))
        XCTAssertTrue(error("").contains("has an empty term"))
        XCTAssertTrue(error("@queue").contains("'@queue' wants @key=value"))
        XCTAssertTrue(error("@=nix").contains("wants @key=value"))
        XCTAssertTrue(error("@queue=").contains("wants @key=value"))
    }
}
