// `bkfleet apply` end to end on the test fleet: fresh hosts converge in one run with
// every agent running, confined and registered; a second run changes nothing; a tag
// change touches only its host; a removed agent is stopped and its files removed.
import Foundation
import XCTest

final class ApplyFleetTests: XCTestCase {
    let hosts = ["builder-01", "builder-02", "builder-03"]
    let agentsOn = ["builder-01": ["builder", "deploy"], "builder-02": ["builder"],
                    "builder-03": ["builder"]]

    override func setUpWithError() throws {
        try FleetHarness.requireFleet()
        continueAfterFailure = true
    }

    /// Everything under bkfleet's folders, the unit files and the NixOS generation, with
    /// modification times, owners and modes: equal snapshots mean nothing was written.
    /// bkfleet's own run record (`last-apply`, `runs/`) may change on every apply, as
    /// "writes nothing" allows; everything else must stay as it was.
    func snapshot(_ host: String) -> String {
        FleetHarness.exec(host, """
            find /etc/nixos /var/lib/bkfleet /etc/systemd/system /nix/var/nix/profiles \
              \\( -path /var/lib/bkfleet/runs -o -path /var/lib/bkfleet/last-apply \
                 -o -path /var/lib/bkfleet/backup \\) -prune \
              -o -path /var/lib/bkfleet -printf '%p %u:%g %m\\n' \
              -o -printf '%p %T@ %u:%g %m\\n' 2>/dev/null | sort
            readlink /nix/var/nix/profiles/system
            """).out
    }

    func apply(_ inventory: String, _ extra: [String] = []) -> CommandResult {
        FleetHarness.bkfleet(["apply", inventory] + extra)
    }

    func test_fresh_hosts_converge_in_one_apply_confined_registered_with_strict_secrets()
        throws {
        FleetHarness.reset(hosts)
        let inventory = try FleetHarness.inventory(FleetHarness.standardInventory())
        let result = apply(inventory)
        XCTAssertEqual(result.status, 0, result.all)
        XCTAssertTrue(result.out.contains("3 host(s), 3 changed"), result.out)

        let token = FleetHarness.tokenValue()
        XCTAssertFalse(token.isEmpty)
        for host in hosts {
            for agent in agentsOn[host]! {
                let unit = "buildkite-agent-\(agent)"
                let show = FleetHarness.exec(host, "systemctl show \(unit) -p ActiveState "
                                             + "-p SubState -p RootDirectory").out
                XCTAssertTrue(show.contains("ActiveState=active"), "\(host) \(agent): \(show)")
                XCTAssertTrue(show.contains("RootDirectory=/"), "\(host) \(agent): \(show)")
                let stat = FleetHarness.exec(host, "stat -c '%U %G %a' "
                                             + "/var/lib/bkfleet/secrets/\(agent)/token").out
                XCTAssertEqual(stat.trimmingCharacters(in: .whitespacesAndNewlines),
                               "\(unit) \(unit) 400", "\(host) \(agent) token")
                let registered = FleetHarness.exec(host, "journalctl -u \(unit) -o cat | "
                                                   + "grep 'Successfully registered agent'").out
                XCTAssertTrue(registered.contains("\"\(host)-\(agent)-1\""),
                              "\(host) \(agent): \(registered)")
            }
            // The SSH key is given to `builder` only, with the same owner and mode.
            let key = FleetHarness.exec(host, "stat -c '%U %a' "
                                        + "/var/lib/bkfleet/secrets/builder/ssh_key").out
            XCTAssertEqual(key.trimmingCharacters(in: .whitespacesAndNewlines),
                           "buildkite-agent-builder 400")
            // The token's value is nowhere in the NixOS configuration or the store.
            let leak = FleetHarness.exec(host, """
                grep -rlF "$(cat /var/lib/bkfleet/secrets/builder/token)" /etc/nixos /nix/store \
                  /etc/systemd/system 2>/dev/null; true
                """)
            XCTAssertEqual(leak.out, "", "\(host): token value found in \(leak.out)")
        }
        XCTAssertFalse(result.all.contains(token), "token value in bkfleet's output")
        let runDir = result.out.components(separatedBy: "Logs: ").last?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        XCTAssertTrue(FileManager.default.fileExists(atPath: runDir), runDir)
        for file in (try? FileManager.default.contentsOfDirectory(atPath: runDir)) ?? [] {
            XCTAssertFalse(FleetHarness.read(runDir + "/" + file).contains(token),
                           "token value in log \(file)")
        }

        // A second apply writes nothing, rebuilds nothing and exits 0.
        let before = hosts.map(snapshot)
        let again = apply(inventory)
        XCTAssertEqual(again.status, 0, again.all)
        XCTAssertTrue(again.out.contains("0 changed, 3 unchanged, 0 failed"), again.out)
        XCTAssertEqual(hosts.map(snapshot), before, "second apply changed files")
    }

    func test_changing_a_tag_rebuilds_only_its_host_and_the_agent_reregisters() throws {
        let inventory = try FleetHarness.inventory(FleetHarness.standardInventory())
        let first = apply(inventory)
        XCTAssertEqual(first.status, 0, first.all)
        let before = hosts.map(snapshot)

        let changed = try FleetHarness.inventory(FleetHarness.standardInventory()
            .replacingOccurrences(of: "queue = \"deploy\"",
                                  with: "queue = \"deploy\", stage = \"blue\""))
        let result = apply(changed)
        XCTAssertEqual(result.status, 0, result.all)
        XCTAssertTrue(result.out.contains("1 changed, 2 unchanged"), result.out)
        let after = hosts.map(snapshot)
        XCTAssertNotEqual(after[0], before[0], "builder-01 should have changed")
        XCTAssertEqual(after[1], before[1], "builder-02 must not be touched")
        XCTAssertEqual(after[2], before[2], "builder-03 must not be touched")
        let log = FleetHarness.exec("builder-01", """
            start=$(systemctl show buildkite-agent-deploy --timestamp=unix \
              -p ExecMainStartTimestamp --value)
            journalctl -u buildkite-agent-deploy --since "$start" -o cat \
              | grep 'Successfully registered'
            """).out
        XCTAssertTrue(log.contains("stage=blue"), log)
    }

    func test_removing_an_agent_stops_it_and_removes_its_module_and_secrets() throws {
        let inventory = try FleetHarness.inventory(FleetHarness.standardInventory())
        XCTAssertEqual(apply(inventory).status, 0)
        let without = try FleetHarness.inventory(FleetHarness.standardInventory()
            .replacingOccurrences(of: "agents = [\"builder\", \"deploy\"]",
                                  with: "agents = [\"builder\"]"))
        let result = apply(without)
        XCTAssertEqual(result.status, 0, result.all)
        let state = FleetHarness.exec("builder-01", """
            systemctl is-active buildkite-agent-deploy; \
            ls /etc/nixos/bkfleet; ls /var/lib/bkfleet/secrets
            """).out
        // NixOS's pre-start copies the token into the agent's data folder: it goes too.
        let data = FleetHarness.exec("builder-01",
                                     "ls -d /var/lib/buildkite-agent-deploy 2>/dev/null").out
        XCTAssertEqual(data, "", "the removed agent's data folder (with its token copy) stayed")
        XCTAssertFalse(state.contains("deploy.nix"), state)
        XCTAssertFalse(state.split(separator: "\n").contains("deploy"), state)
        XCTAssertNotEqual(state.split(separator: "\n").first, "active", state)
    }
}
