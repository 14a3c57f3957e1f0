// Rotations of a subset and of a broken store, on the fleet and its Buildkite stand-in:
// an old token another entry (or an unselected agent) still runs is never revoked, agents
// outside the selection are never touched, a store that does not keep the new token stops
// the run, and a new token revoked behind bkfleet's back is replaced, not "finished".
// Scenarios of the whole fleet are in RotateFleetTests.swift (same helpers).
import Foundation
import XCTest

extension RotateFleetTests {
    /// The token file's SHA-256 and the unit's main process of `agent` on `host`.
    func onHost(_ host: String, _ agent: String) -> (sum: String, pid: String) {
        let sum = FleetHarness.exec(host, "sha256sum < /var/lib/bkfleet/secrets/\(agent)/token")
        let pid = FleetHarness.exec(host, "systemctl show -p MainPID --value "
                                    + "buildkite-agent-\(agent)")
        return (String(sum.out.prefix(64)),
                pid.out.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    func test_a_token_another_entry_holds_is_not_revoked_by_a_subset_rotation() throws {
        // 'copy' is a second entry with the same value as the API-managed 'default'.
        let text = try String(contentsOfFile: inventory(), encoding: .utf8)
            .replacingOccurrences(of: "[agents.deploy]\ntoken = \"default\"",
                                  with: "[agents.deploy]\ntoken = \"copy\"")
            + "\n[tokens.copy]\nfile = \"\(FleetHarness.clientDir)/tokens/second.token\"\n"
        XCTAssertTrue(text.contains("token = \"copy\""), "inventory template changed")
        let inventory = try FleetHarness.inventory(text)
        let old = FleetHarness.tokenValue("second")
        let applied = FleetHarness.bkfleet(["apply", inventory])
        XCTAssertEqual(applied.status, 0, applied.all)

        let rotated = FleetHarness.bkfleet(["rotate", inventory, "--agent", "builder"])
        XCTAssertEqual(rotated.status, 0, rotated.all)
        XCTAssertNil(token(fingerprint: fingerprint(old))?["revoked_at"] as? String,
                     "the old token was revoked although deploy agents run it: \(rotated.out)")
        XCTAssertTrue(rotated.out.contains("kept alive"), rotated.out)
        XCTAssertTrue(rotated.out.contains("builder-01/deploy"), rotated.out)
        XCTAssertEqual(onHost("builder-01", "deploy").sum, sha256(old))
    }

    func test_rotating_agents_one_by_one_leaves_the_others_alone_and_then_revokes() throws {
        let inventory = try inventory()
        let old = FleetHarness.tokenValue("second")
        let applied = FleetHarness.bkfleet(["apply", inventory])
        XCTAssertEqual(applied.status, 0, applied.all)

        let first = FleetHarness.bkfleet(["rotate", inventory, "--agent", "builder"])
        XCTAssertEqual(first.status, 0, first.all)
        XCTAssertNil(token(fingerprint: fingerprint(old))?["revoked_at"] as? String,
                     first.out)
        let (newValue, _) = try XCTUnwrap(current(storeDocument(inventory)), first.all)
        let builders = hosts.map { onHost($0, "builder") }
        for (host, seen) in zip(hosts, builders) {
            XCTAssertEqual(seen.sum, sha256(newValue), "\(host)/builder not on the new token")
        }

        // The second half: builder agents keep their file and their process.
        let second = FleetHarness.bkfleet(["rotate", inventory, "--agent", "deploy"])
        XCTAssertEqual(second.status, 0, second.all)
        for (host, before) in zip(hosts, builders) {
            let after = onHost(host, "builder")
            XCTAssertEqual(after.sum, sha256(newValue), "\(host)/builder got another token")
            XCTAssertEqual(after.pid, before.pid, "\(host)/builder was restarted")
        }
        for host in ["builder-01", "builder-02"] {
            XCTAssertEqual(onHost(host, "deploy").sum, sha256(newValue), host)
        }
        XCTAssertNotNil(token(fingerprint: fingerprint(old))?["revoked_at"] as? String,
                        "nobody runs the old token any more: \(second.out)")
        XCTAssertNil(current(storeDocument(inventory), "previous")?.1,
                     "the old token is still in the store")
    }

    func test_a_store_that_does_not_keep_the_new_token_stops_the_rotation() throws {
        let folder = NSTemporaryDirectory() + "bkfleet-swallow-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder,
                                                withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let base = try String(contentsOfFile: inventory(), encoding: .utf8)
        let text = base.replacingOccurrences(
            of: "store = \"store/default.json\"",
            with: "store_read = \"cat \(folder)/doc 2>/dev/null || true\", "
                + "store_write = \"cat > /dev/null\"")
        XCTAssertNotEqual(text, base, "inventory template changed")
        let inventory = try FleetHarness.inventory(text)
        let old = FleetHarness.tokenValue("second")
        let applied = FleetHarness.bkfleet(["apply", inventory])
        XCTAssertEqual(applied.status, 0, applied.all)
        let live = tokens().filter { $0["revoked_at"] as? String == nil }.count

        let rotated = FleetHarness.bkfleet(["rotate", inventory])
        XCTAssertNotEqual(rotated.status, 0, rotated.all)
        XCTAssertTrue(rotated.err.contains("does not hold the new token"), rotated.all)
        XCTAssertEqual(tokens().filter { $0["revoked_at"] as? String == nil }.count, live,
                       "the token the store lost was left alive, or the old one was revoked")
        XCTAssertNil(token(fingerprint: fingerprint(old))?["revoked_at"] as? String)
        XCTAssertEqual(onHost("builder-01", "builder").sum, sha256(old), "a host was changed")
    }

    func test_a_rerun_whose_new_token_was_revoked_starts_a_fresh_rotation() throws {
        let inventory = try inventory()
        let old = FleetHarness.tokenValue("second")
        let oldID = try XCTUnwrap(token(fingerprint: fingerprint(old))?["id"] as? String)
        let applied = FleetHarness.bkfleet(["apply", inventory])
        XCTAssertEqual(applied.status, 0, applied.all)

        // An unfinished rotation whose new token someone revoked since.
        let dead = try createToken("bkfleet rotate default (revoked)")
        let bearer = FleetHarness.read(FleetHarness.clientDir + "/api-token")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        _ = standin("DELETE", "/v2/organizations/demo/clusters/default/tokens/\(dead.id)",
                    header: "Authorization: Bearer \(bearer)")
        try writeUnfinishedStore(inventory, current: dead, previous: (old, oldID))

        let rerun = FleetHarness.bkfleet(["rotate", inventory])
        XCTAssertEqual(rerun.status, 0, rerun.all)
        XCTAssertTrue(rerun.out.contains("no longer exists in Buildkite"), rerun.out)
        let (fresh, freshID) = try XCTUnwrap(current(storeDocument(inventory)), rerun.all)
        XCTAssertNotEqual(freshID, dead.id)
        for host in hosts {
            XCTAssertEqual(onHost(host, "builder").sum, sha256(fresh), host)
        }
        XCTAssertNotNil(token(fingerprint: fingerprint(old))?["revoked_at"] as? String)
    }
}
