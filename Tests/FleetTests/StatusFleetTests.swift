// Fleet tests for the operator commands: `status` on a converged host and on hosts that
// drifted (token touched, token edited by hand, unit stopped), `retire` (dry run, then
// for real, then how status reads the retired host), the jump host (`fleet up 3
// --inner 1`: inner-01 only through builder-01; one jump session shared by two hosts
// behind it) and an identity file protected by a passphrase read from its source. They
// need the fleet up.
import Foundation
import XCTest

final class StatusFleetTests: XCTestCase {
    override func setUpWithError() throws {
        try FleetHarness.requireFleet()
    }

    private func statusJSON(_ inventory: String, on host: String,
                            environment: [String: String] = [:]) throws
        -> (CommandResult, [String: Any]) {
        let result = FleetHarness.bkfleet(["status", inventory, "--on", host, "--json"],
                                          environment: environment)
        let json = try JSONSerialization.jsonObject(with: Data(result.out.utf8))
        return (result, try XCTUnwrap(json as? [String: Any], result.all))
    }

    private func agent(_ document: [String: Any], _ name: String) -> [String: Any]? {
        let hosts = document["hosts"] as? [[String: Any]] ?? []
        let agents = hosts.first?["agents"] as? [[String: Any]] ?? []
        return agents.first { $0["agent"] as? String == name }
    }

    func testStatusOnConvergedThenDriftedHost() throws {
        FleetHarness.reset(["builder-02"])
        let inventory = try FleetHarness.inventory(FleetHarness.standardInventory())
        let apply = FleetHarness.bkfleet(["apply", inventory, "--on", "builder-02"])
        XCTAssertEqual(apply.status, 0, apply.all)

        let (ok, converged) = try statusJSON(inventory, on: "builder-02")
        XCTAssertEqual(ok.status, 0, ok.all)
        XCTAssertEqual(converged["ok"] as? Bool, true, ok.out)
        let host = (converged["hosts"] as? [[String: Any]])?.first
        let record = host?["last_apply"] as? [String: String]
        let time = try XCTUnwrap(record?["time"], "apply leaves a run record: \(ok.out)")
        XCTAssertNotNil(time.range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"#,
                                   options: .regularExpression), "ISO 8601 UTC: \(time)")
        let builder = try XCTUnwrap(agent(converged, "builder"), ok.out)
        XCTAssertEqual(builder["token_on_host"] as? String, builder["token_wanted"] as? String)
        XCTAssertEqual(builder["registered"] as? Bool, true, ok.out)
        XCTAssertEqual(builder["confined"] as? Bool, true)
        XCTAssertEqual(builder["connected"] as? Bool, true, ok.out)
        XCTAssertEqual(builder["token_mode"] as? String, "0400")
        XCTAssertFalse(ok.all.contains(FleetHarness.tokenValue()))

        // The token file changed after the agent started: a restart is pending.
        FleetHarness.exec("builder-02", "sleep 1; touch /var/lib/bkfleet/secrets/builder/token")
        let (touched, after) = try statusJSON(inventory, on: "builder-02")
        XCTAssertEqual(touched.status, 1, touched.all)
        XCTAssertEqual(agent(after, "builder")?["restart_pending"] as? Bool, true, touched.out)
        let table = FleetHarness.bkfleet(["status", inventory, "--on", "builder-02"])
        XCTAssertTrue(table.out.contains("restart pending"), table.out)

        // Someone replaced the token by hand: the fingerprints differ, the table says so.
        FleetHarness.exec("builder-02", "printf other > /var/lib/bkfleet/secrets/builder/token")
        let drifted = FleetHarness.bkfleet(["status", inventory, "--on", "builder-02"])
        XCTAssertEqual(drifted.status, 1, drifted.all)
        XCTAssertTrue(drifted.out.contains(" differs "), drifted.out)
        XCTAssertTrue(drifted.out.contains("sha256:"), drifted.out)

        // Status wrote nothing: the drift is still there for apply to repair.
        let repair = FleetHarness.bkfleet(["apply", inventory, "--on", "builder-02"])
        XCTAssertEqual(repair.status, 0, repair.all)
        XCTAssertTrue(repair.out.contains("changed"), repair.out)
    }

    func testTokenChangedByHandShowsRestartPendingThenStoppedUnitShowsNoConfinement()
        throws {
        FleetHarness.reset(["builder-04"])
        let inventory = try FleetHarness.inventory(FleetHarness.standardInventory(
            hostsOverride: """
            [[hosts]]
            name = "builder-04"
            address = "10.250.0.14"
            agents = ["builder"]
            """))
        let apply = FleetHarness.bkfleet(["apply", inventory])
        XCTAssertEqual(apply.status, 0, apply.all)

        // Someone edits the token file on the host and restarts nothing.
        let token = "/var/lib/bkfleet/secrets/builder/token"
        FleetHarness.exec("builder-04", "sleep 1; printf edited > \(token).new; "
                          + "cat \(token).new > \(token); rm \(token).new")
        let (edited, document) = try statusJSON(inventory, on: "builder-04")
        XCTAssertEqual(edited.status, 1, edited.all)
        let builder = try XCTUnwrap(agent(document, "builder"), edited.out)
        XCTAssertEqual(builder["restart_pending"] as? Bool, true, edited.out)
        XCTAssertNotEqual(builder["token_on_host"] as? String,
                          builder["token_wanted"] as? String)
        // The agent still runs with the token it started with: Buildkite lists it.
        XCTAssertEqual(builder["connected"] as? Bool, true, edited.out)
        let table = FleetHarness.bkfleet(["status", inventory])
        let note = table.out.split(separator: "\n")
            .first { $0.contains("builder-04: agent builder:") }.map(String.init) ?? ""
        XCTAssertTrue(note.contains("restart pending"), table.out)
        XCTAssertTrue(note.contains("wanted"), table.out)
        XCTAssertTrue(note.contains("bkfleet apply \(inventory) --on builder-04"), table.out)

        // A stopped unit: confinement and registration are unknown, not "yes".
        FleetHarness.exec("builder-04", "systemctl stop buildkite-agent-builder")
        let (stopped, after) = try statusJSON(inventory, on: "builder-04")
        XCTAssertEqual(stopped.status, 1, stopped.all)
        let down = try XCTUnwrap(agent(after, "builder"), stopped.out)
        XCTAssertTrue(down["confined"] is NSNull, stopped.out)
        XCTAssertTrue(down["registered"] is NSNull, stopped.out)
        XCTAssertEqual(down["restart_pending"] as? Bool, false, stopped.out)
        let stoppedTable = FleetHarness.bkfleet(["status", inventory]).out
        let lines = stoppedTable.split(separator: "\n").map(String.init)
        let column = try XCTUnwrap(lines.first?.range(of: "CONFINED"), stoppedTable)
            .lowerBound.utf16Offset(in: lines[0])
        let row = try XCTUnwrap(lines.first { $0.hasPrefix("builder-04") }, stoppedTable)
        XCTAssertEqual(row.dropFirst(column).prefix(8)
                        .trimmingCharacters(in: .whitespaces), "-", stoppedTable)
        XCTAssertTrue(stoppedTable.contains("unit inactive/dead"), stoppedTable)

        let repair = FleetHarness.bkfleet(["apply", inventory])
        XCTAssertEqual(repair.status, 0, repair.all)
        let (fixed, _) = try statusJSON(inventory, on: "builder-04")
        XCTAssertEqual(fixed.status, 0, fixed.all)
    }

    func testStatusReportsUnreachableHost() throws {
        let inventory = try FleetHarness.inventory(FleetHarness.standardInventory(
            hostsOverride: """
            [[hosts]]
            name = "ghost"
            address = "10.250.0.99"
            agents = ["builder"]
            """).replacingOccurrences(of: "verify_timeout = 45",
                                      with: "verify_timeout = 45\nconnect_timeout = 2"))
        let result = FleetHarness.bkfleet(["status", inventory])
        XCTAssertEqual(result.status, 1, result.all)
        XCTAssertTrue(result.out.contains("unreachable"), result.out)
    }

    func testRetireRemovesAgentsModulesAndSecrets() throws {
        FleetHarness.reset(["builder-03"])
        let inventory = try FleetHarness.inventory(FleetHarness.standardInventory())
        let apply = FleetHarness.bkfleet(["apply", inventory, "--on", "builder-03"])
        XCTAssertEqual(apply.status, 0, apply.all)

        let dry = FleetHarness.bkfleet(["retire", "builder-03", "--inventory", inventory,
                                        "--dry-run"])
        XCTAssertEqual(dry.status, 0, dry.all)
        XCTAssertTrue(dry.out.contains("builder.nix"), dry.out)
        XCTAssertEqual(FleetHarness.exec("builder-03", "systemctl is-active "
                                         + "buildkite-agent-builder").out
                        .trimmingCharacters(in: .whitespacesAndNewlines), "active")

        let retire = FleetHarness.bkfleet(["retire", "builder-03", "--inventory", inventory])
        XCTAssertEqual(retire.status, 0, retire.all)
        XCTAssertTrue(retire.out.contains("stays alive"), retire.out)
        let left = FleetHarness.exec("builder-03", """
            ls /etc/nixos/bkfleet; ls /var/lib/bkfleet/secrets | wc -l; \
            systemctl is-active buildkite-agent-builder; cat /var/lib/bkfleet/last-apply
            """)
        XCTAssertTrue(left.out.contains("default.nix"), left.out)
        XCTAssertFalse(left.out.contains("builder.nix"), left.out)
        XCTAssertTrue(left.out.contains("\n0\n"), left.out)
        XCTAssertFalse(left.out.contains("\nactive\n"), left.out)
        XCTAssertTrue(left.out.contains("action=retire"), left.out)

        // Status reads the host as retired: drift only while the inventory still gives
        // it agents, and then it says apply would bring them back.
        let listed = FleetHarness.bkfleet(["status", inventory, "--on", "builder-03"])
        XCTAssertEqual(listed.status, 1, listed.all)
        XCTAssertTrue(listed.out.contains("(retired)"), listed.out)
        XCTAssertTrue(listed.out.contains("would restore"), listed.out)
        let emptied = try FleetHarness.inventory(FleetHarness.standardInventory(
            hostsOverride: """
            [[hosts]]
            name = "builder-03"
            address = "10.250.0.13"
            agents = []
            """))
        let quiet = FleetHarness.bkfleet(["status", emptied])
        XCTAssertEqual(quiet.status, 0, quiet.all)
        XCTAssertTrue(quiet.out.contains("(retired)"), quiet.out)
        let (_, document) = try statusJSON(emptied, on: "builder-03")
        XCTAssertEqual((document["hosts"] as? [[String: Any]])?.first?["retired"] as? Bool,
                       true)

        // A host the inventory no longer lists needs its address.
        let unknown = FleetHarness.bkfleet(["retire", "builder-09", "--inventory", inventory])
        XCTAssertEqual(unknown.status, 64, unknown.all)
        XCTAssertTrue(unknown.err.contains("--address"), unknown.err)
    }

    func testJumpHostReachesInnerHost() throws {
        let hosts = FleetHarness.read(FleetHarness.clientDir + "/hosts.json")
        guard hosts.contains("inner-01") else {
            throw XCTSkip("needs `fleet up 3 --inner 1`")
        }
        FleetHarness.reset(["inner-01"])
        // Agents on inner hosts cannot reach the Buildkite stand-in (docs/test-fleet.md),
        // so the host gets none: the index, the rebuild and the reads go through the jump.
        let inventory = try FleetHarness.inventory(FleetHarness.standardInventory(
            hostsOverride: """
            [[hosts]]
            name = "builder-01"
            address = "10.250.0.11"
            agents = ["builder", "deploy"]
            [[hosts]]
            name = "inner-01"
            address = "10.250.1.11"
            agents = []
            jump = "builder-01"
            """))
        let plan = FleetHarness.bkfleet(["plan", inventory, "--on", "inner-01"])
        XCTAssertEqual(plan.status, 0, plan.all)
        XCTAssertTrue(plan.out.contains("default.nix"), plan.out)
        let apply = FleetHarness.bkfleet(["apply", inventory, "--on", "inner-01"])
        XCTAssertEqual(apply.status, 0, apply.all)
        XCTAssertTrue(FleetHarness.exec("inner-01", "cat /etc/nixos/bkfleet/default.nix")
                        .status == 0)
        let again = FleetHarness.bkfleet(["apply", inventory, "--on", "inner-01"])
        XCTAssertTrue(again.out.contains("0 changed, 1 unchanged"), again.all)
        let (status, document) = try statusJSON(inventory, on: "inner-01")
        XCTAssertEqual(status.status, 0, status.all)
        XCTAssertEqual((document["hosts"] as? [[String: Any]])?.first?["reachable"] as? Bool,
                       true)

        // Without the jump, inner-01 is not reachable from here.
        let direct = try FleetHarness.inventory(FleetHarness.standardInventory(
            hostsOverride: """
            [[hosts]]
            name = "inner-01"
            address = "10.250.1.11"
            agents = []
            """).replacingOccurrences(of: "verify_timeout = 45",
                                      with: "verify_timeout = 45\nconnect_timeout = 2"))
        let refused = FleetHarness.bkfleet(["status", direct])
        XCTAssertEqual(refused.status, 1, refused.all)
    }

    func testHostsBehindOneBastionShareOneJumpSession() throws {
        let hosts = FleetHarness.read(FleetHarness.clientDir + "/hosts.json")
        guard hosts.contains("inner-01") else {
            throw XCTSkip("needs `fleet up 4 --inner 1`")
        }
        // Two hosts behind the same bastion: inner-01 (reachable only so) and builder-04
        // (which builder-01 reaches on the outer bridge too). No agents: inner hosts
        // cannot reach the Buildkite stand-in (docs/test-fleet.md).
        FleetHarness.reset(["inner-01", "builder-04"])
        let inventory = try FleetHarness.inventory(FleetHarness.standardInventory(
            hostsOverride: """
            [[hosts]]
            name = "inner-01"
            address = "10.250.1.11"
            agents = []
            jump = { address = "10.250.0.11", user = "root" }
            [[hosts]]
            name = "builder-04"
            address = "10.250.0.14"
            agents = []
            jump = { address = "10.250.0.11", user = "root" }
            """))
        func jumpConnections(_ output: String) -> Int {
            output.components(separatedBy: "connecting to jump host").count - 1
        }
        // Both hosts are in flight together (parallel 50): one connection to the
        // bastion carries both.
        let apply = FleetHarness.bkfleet(["apply", inventory, "-v"])
        XCTAssertEqual(apply.status, 0, apply.all)
        XCTAssertEqual(jumpConnections(apply.all), 1, apply.all)
        XCTAssertTrue(apply.out.contains("2 changed"), apply.all)
        let status = FleetHarness.bkfleet(["status", inventory, "-v"])
        XCTAssertEqual(status.status, 0, status.all)
        XCTAssertEqual(jumpConnections(status.all), 1, status.all)
        XCTAssertFalse(status.out.contains("unreachable"), status.out)
        FleetHarness.reset(["builder-04"])
    }

    func testPassphraseFromItsSourceAndClearErrorWithout() throws {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("bkfleet-pass-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let key = dir + "/id_pw"
        let keygen = FleetHarness.run("/usr/bin/ssh-keygen",
                                      ["-q", "-t", "ed25519", "-N", "open sesame", "-C",
                                       "bkfleet-test", "-f", key])
        XCTAssertEqual(keygen.status, 0, keygen.all)
        let pub = FleetHarness.read(key + ".pub").trimmingCharacters(in: .whitespacesAndNewlines)
        FleetHarness.exec("builder-01", "echo '\(pub)' >> /root/.ssh/authorized_keys")
        defer {
            FleetHarness.exec("builder-01", "sed -i '/bkfleet-test/d' /root/.ssh/authorized_keys")
        }
        let text = FleetHarness.standardInventory(hostsOverride: """
            [[hosts]]
            name = "builder-01"
            address = "10.250.0.11"
            agents = []
            """).replacingOccurrences(of: "identity_file = \"@FLEET@/id_ed25519\"",
                                      with: "identity_file = \"\(key)\"")
        let withSource = try FleetHarness.inventory(text.replacingOccurrences(
            of: "verify_timeout = 45",
            with: "verify_timeout = 45\nidentity_passphrase = { env = \"BKF_TEST_PASS\" }"))
        let plan = FleetHarness.bkfleet(["plan", withSource],
                                        environment: ["BKF_TEST_PASS": "open sesame"])
        XCTAssertEqual(plan.status, 0, plan.all)
        XCTAssertFalse(plan.all.contains("open sesame"))

        // No source and no terminal (the harness gives a pipe): a clear error, nothing tried.
        let without = try FleetHarness.inventory(text)
        let refused = FleetHarness.bkfleet(["plan", without])
        XCTAssertEqual(refused.status, 65, refused.all)
        XCTAssertTrue(refused.err.contains("passphrase-protected"), refused.err)
        XCTAssertTrue(refused.err.contains("identity_passphrase"), refused.err)
    }
}
