// Faults and hostile build jobs on one host (builder-04): a rerun after an apply killed
// mid-switch rolls back to the last verified state (not to the killed run's files), and a
// secret a build job swapped for a link is replaced, never re-owned through the link.
// Waits poll for a state on the host; no assertion depends on how long a step took.
import Foundation
import XCTest

final class FaultGuardFleetTests: XCTestCase {
    let host = "builder-04"

    override func setUpWithError() throws {
        try FleetHarness.requireFleet()
        continueAfterFailure = true
    }

    override func tearDown() {
        FleetHarness.run(FleetHarness.fleetScript, ["set", host, "rebuild-seconds", "0"])
        FleetHarness.run(FleetHarness.fleetScript, ["set", host, "fail-switch", "off"])
    }

    /// builder-04 alone with `agents`; every agent uses `token` (default: the fleet's).
    func inventory(agents: [String] = ["builder"], token: String? = nil,
                   tags: String = "queue = \"nix\"") throws -> String {
        var text = FleetHarness.standardInventory(agentsExtra: """
            [agents.second]
            token = "default"
            tags = { queue = "nix2" }
            extra_config = "endpoint=https://agent.buildkite.test/v3"
            """, hostsOverride: """
            [[hosts]]
            name = "\(host)"
            address = "10.250.0.14"
            agents = [\(agents.map { "\"\($0)\"" }.joined(separator: ", "))]
            """)
            .replacingOccurrences(of: "verify_timeout = 45", with: "verify_timeout = 20\n"
                                  + "lock_timeout = 60")
            .replacingOccurrences(of: "tags = { queue = \"nix\" }", with: "tags = { \(tags) }")
        if let token {
            text = text.replacingOccurrences(of: "@FLEET@/tokens/default.token", with: token)
        }
        return try FleetHarness.inventory(text)
    }

    @discardableResult
    func sh(_ script: String) -> String {
        FleetHarness.exec(host, script).out.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Polls `script` on the host until it prints something (at most `tries` × 0.5 s).
    @discardableResult
    func waitFor(_ script: String, tries: Int = 240) -> String {
        for _ in 0..<tries {
            let out = sh(script)
            if !out.isEmpty { return out }
            Thread.sleep(forTimeInterval: 0.5)
        }
        return ""
    }

    func digest(ofFile path: String) -> String {
        FleetHarness.run("/bin/sh", ["-c", "tr -d '\\n' < \(path) | sha256sum | cut -c1-64"])
            .out.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    // MARK: - Killed apply, then a failing rerun

    func test_a_rerun_after_a_killed_apply_rolls_back_to_the_last_verified_state() throws {
        FleetHarness.reset([host])
        let good = FleetHarness.bkfleet(["apply", try inventory()])
        XCTAssertEqual(good.status, 0, good.all)
        let goodDigest = digest(ofFile: FleetHarness.clientDir + "/tokens/default.token")
        XCTAssertEqual(sh("sha256sum < /var/lib/bkfleet/secrets/builder/token | cut -c1-64"),
                       goodDigest)

        // An apply of a bad token and a changed module, killed while its detached switch
        // runs; the switch still finishes with the bad files.
        let bad = try inventory(token: try FleetHarness.badTokenFile(),
                                tags: "queue = \"nix\", stage = \"b\"")
        FleetHarness.run(FleetHarness.fleetScript, ["set", host, "rebuild-seconds", "4"])
        let killed = Process()
        killed.executableURL = URL(fileURLWithPath: FleetHarness.binary)
        killed.arguments = ["apply", bad]
        killed.standardOutput = FileHandle.nullDevice
        killed.standardError = FileHandle.nullDevice
        killed.standardInput = FileHandle.nullDevice
        try killed.run()
        XCTAssertFalse(waitFor("systemctl list-units --plain --no-legend --state=active "
                               + "'bkfleet-rebuild-*'").isEmpty, "no detached rebuild seen")
        kill(killed.processIdentifier, SIGKILL)
        killed.waitUntilExit()
        XCTAssertFalse(waitFor("systemctl list-units --plain --no-legend --state=active "
                               + "'bkfleet-rebuild-*' | grep -q . || echo done").isEmpty)
        FleetHarness.run(FleetHarness.fleetScript, ["set", host, "rebuild-seconds", "0"])
        // Status does not call the host fine while the switch is unfinished.
        let status = FleetHarness.bkfleet(["status", bad])
        XCTAssertNotEqual(status.status, 0, status.all)
        XCTAssertTrue(status.out.contains("an earlier switch did not finish"), status.all)
        XCTAssertNotEqual(sh("sha256sum < /var/lib/bkfleet/secrets/builder/token "
                             + "| cut -c1-64"), goodDigest, "the killed run changed nothing")

        // The rerun of the bad inventory fails and must put back the verified token.
        let rerun = FleetHarness.bkfleet(["apply", bad])
        XCTAssertNotEqual(rerun.status, 0, rerun.all)
        XCTAssertTrue(rerun.all.contains("rolled back:"), rerun.all)
        XCTAssertEqual(sh("sha256sum < /var/lib/bkfleet/secrets/builder/token | cut -c1-64"),
                       goodDigest, "rollback restored the killed run's files: \(rerun.all)")
        XCTAssertEqual(sh("systemctl is-active buildkite-agent-builder"), "active")
        XCTAssertEqual(sh("ls /var/lib/bkfleet/backup"), "", "backups kept after rollback")
        // And the host is as the good inventory wants.
        let again = FleetHarness.bkfleet(["apply", try inventory()])
        XCTAssertEqual(again.status, 0, again.all)
    }

    // MARK: - Leftovers and unreachable hosts in plan and status

    func test_a_temporary_file_left_in_the_module_folder_shows_in_plan_and_status() throws {
        FleetHarness.reset([host])
        let path = try inventory()
        let first = FleetHarness.bkfleet(["apply", path])
        XCTAssertEqual(first.status, 0, first.all)
        sh("touch /etc/nixos/bkfleet/.builder.nix.bkfleet-tmp.Zq81")
        let plan = FleetHarness.bkfleet(["plan", path])
        XCTAssertTrue(plan.out.contains("1 temporary file(s)"), plan.all)
        let status = FleetHarness.bkfleet(["status", path])
        XCTAssertNotEqual(status.status, 0, status.all)
        XCTAssertTrue(status.out.contains(".builder.nix.bkfleet-tmp.Zq81"), status.all)
        let again = FleetHarness.bkfleet(["apply", path])
        XCTAssertEqual(again.status, 0, again.all)
        XCTAssertEqual(sh("ls -a /etc/nixos/bkfleet | grep bkfleet-tmp"), "")
    }

    func test_status_json_of_an_unreachable_host_lists_its_inventory_agents() throws {
        let path = try FleetHarness.inventory(FleetHarness.read(try inventory())
            .replacingOccurrences(of: "10.250.0.14", with: "10.250.0.99"))
        let result = FleetHarness.bkfleet(["status", "--json", path])
        let json = try JSONSerialization.jsonObject(with: Data(result.out.utf8))
            as? [String: Any]
        let hosts = json?["hosts"] as? [[String: Any]] ?? []
        let agents = hosts.first?["agents"] as? [[String: Any]] ?? []
        XCTAssertEqual(agents.map { $0["agent"] as? String }, ["builder"], result.all)
        XCTAssertTrue(agents.first?["running"] is NSNull, result.out)
        XCTAssertTrue(agents.first?["ssh_key_wanted"] is String, result.out)
    }

    // MARK: - A secret swapped for a link

    func test_a_secret_replaced_by_a_link_is_replaced_and_the_target_keeps_its_owner()
        throws {
        FleetHarness.reset([host])
        let path = try inventory(agents: ["builder", "second"])
        let first = FleetHarness.bkfleet(["apply", path])
        XCTAssertEqual(first.status, 0, first.all)
        // A build job of `builder` (owner of its folder) swaps its token for a link to
        // `second`'s token (same value: both agents use the same token).
        sh("cd /var/lib/bkfleet/secrets/builder && rm -f token && "
           + "ln -s /var/lib/bkfleet/secrets/second/token token")
        let plan = FleetHarness.bkfleet(["plan", path])
        XCTAssertTrue(plan.out.contains("not-a-regular-file"), plan.all)
        let result = FleetHarness.bkfleet(["apply", path])
        XCTAssertEqual(result.status, 0, result.all)
        XCTAssertEqual(sh("stat -c '%U %a' /var/lib/bkfleet/secrets/second/token"),
                       "buildkite-agent-second 400", "the link's target was re-owned")
        XCTAssertEqual(sh("stat -c '%F %U %a' /var/lib/bkfleet/secrets/builder/token"),
                       "regular file buildkite-agent-builder 400")
    }
}
