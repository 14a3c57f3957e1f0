// `bkfleet plan` and `apply --dry-run` on the test fleet: they show exactly what apply
// will do, write nothing, see drift made by hand, and a saved plan is applied only where
// the host still matches it.
import Foundation
import XCTest

final class PlanFleetTests: XCTestCase {
    let hosts = ["builder-01", "builder-02", "builder-03"]

    override func setUpWithError() throws {
        try FleetHarness.requireFleet()
        continueAfterFailure = true
    }

    /// What "writes nothing" covers, with times, owners and modes: the module folder,
    /// secrets, /etc/nixos, unit files, generations and unit states; plus any staging
    /// folder `--deep` might have left in /tmp.
    func snapshot(_ host: String) -> String {
        FleetHarness.exec(host, """
            find /etc/nixos /var/lib/bkfleet /etc/systemd/system \
              -printf '%p %T@ %u:%g %m\\n' 2>/dev/null | sort
            ls -l --time-style=+%s /nix/var/nix/profiles | grep system
            readlink /nix/var/nix/profiles/system
            ls -d /tmp/bkfleet-* 2>/dev/null
            systemctl list-units --all --plain --no-legend 'buildkite-agent-*'
            """).out
    }

    func test_plan_on_fresh_hosts_lists_exactly_what_apply_creates_and_writes_nothing()
        throws {
        FleetHarness.reset(hosts)
        let inventory = try FleetHarness.inventory(FleetHarness.standardInventory())
        let before = hosts.map(snapshot)
        let plan = FleetHarness.bkfleet(["plan", inventory, "--json"])
        XCTAssertEqual(plan.status, 0, plan.all)
        let dry = FleetHarness.bkfleet(["apply", inventory, "--dry-run", "--deep"])
        XCTAssertEqual(dry.status, 0, dry.all)
        XCTAssertTrue(dry.out.contains("dry-activate"), dry.out)
        XCTAssertEqual(hosts.map(snapshot), before, "plan or --dry-run changed a host")

        let document = try JSONSerialization.jsonObject(with: Data(plan.out.utf8))
            as! [String: Any]
        let planned = document["hosts"] as! [[String: Any]]
        let apply = FleetHarness.bkfleet(["apply", inventory])
        XCTAssertEqual(apply.status, 0, apply.all)
        for host in planned {
            let name = host["name"] as! String
            let files = (host["modules"] as! [[String: Any]]).map { $0["file"] as! String }
            let onHost = FleetHarness.exec(name, "ls /etc/nixos/bkfleet").out
                .split(separator: "\n").map(String.init)
            XCTAssertEqual(Set(files), Set(onHost), name)
            let secrets = (host["secrets"] as! [[String: Any]]).map {
                "\($0["agent"]!)/\($0["kind"]!)"
            }
            let secretFiles = FleetHarness.exec(name, "cd /var/lib/bkfleet/secrets && ls -d */*").out
                .split(separator: "\n").map(String.init)
            XCTAssertEqual(Set(secrets), Set(secretFiles), name)
            let units = (host["units"] as! [[String: Any]]).map { $0["agent"] as! String }
            let active = FleetHarness.exec(name, """
                systemctl list-units --state=active --plain --no-legend 'buildkite-agent-*' \
                  | awk '{ sub(/^buildkite-agent-/, "", $1); sub(/\\.service$/, "", $1);
                           print $1 }'
                """).out.split(separator: "\n").map(String.init)
            XCTAssertEqual(Set(units), Set(active), name)
        }

        let again = FleetHarness.bkfleet(["plan", inventory, "--detailed-exitcode"])
        XCTAssertEqual(again.status, 0, again.all)
        XCTAssertTrue(again.out.contains("No changes. The fleet matches the inventory."))
    }

    func test_drift_made_by_hand_shows_in_the_plan_and_apply_repairs_it() throws {
        let inventory = try FleetHarness.inventory(FleetHarness.standardInventory())
        XCTAssertEqual(FleetHarness.bkfleet(["apply", inventory]).status, 0)
        FleetHarness.exec("builder-01", "echo '# edited by hand' >> /etc/nixos/bkfleet/deploy.nix")
        FleetHarness.exec("builder-02", "chmod 644 /var/lib/bkfleet/secrets/builder/token")
        FleetHarness.exec("builder-03", """
            cat /var/lib/bkfleet/secrets/builder/token > /dev/null
            printf 'replaced-by-hand' > /var/lib/bkfleet/secrets/builder/token
            """)
        FleetHarness.exec("builder-01", "systemctl stop buildkite-agent-builder")

        let plan = FleetHarness.bkfleet(["plan", inventory, "--detailed-exitcode"])
        XCTAssertEqual(plan.status, 2, plan.all)
        XCTAssertTrue(plan.out.contains("~ module /etc/nixos/bkfleet/deploy.nix"), plan.out)
        XCTAssertTrue(plan.out.contains("-# edited by hand"), plan.out)
        XCTAssertTrue(plan.out.contains("ownership /var/lib/bkfleet/secrets/builder/token"),
                      plan.out)
        XCTAssertTrue(plan.out.contains("~ token of agent builder sha256:"), plan.out)
        XCTAssertTrue(plan.out.contains("start buildkite-agent-builder (unit is inactive"),
                      plan.out)

        let apply = FleetHarness.bkfleet(["apply", inventory])
        XCTAssertEqual(apply.status, 0, apply.all)
        let after = FleetHarness.bkfleet(["plan", inventory, "--detailed-exitcode"])
        XCTAssertEqual(after.status, 0, after.all)
        let mode = FleetHarness.exec("builder-02",
                                     "stat -c %a /var/lib/bkfleet/secrets/builder/token").out
        XCTAssertEqual(mode.trimmingCharacters(in: .whitespacesAndNewlines), "400")
    }

    func test_saved_plan_is_refused_where_the_host_drifted_and_applied_elsewhere() throws {
        FleetHarness.reset(hosts)
        let inventory = try FleetHarness.inventory(FleetHarness.standardInventory())
        XCTAssertEqual(FleetHarness.bkfleet(["apply", inventory]).status, 0)
        // The reviewed change: a new tag for `builder`, on every host.
        let changed = try FleetHarness.inventory(FleetHarness.standardInventory()
            .replacingOccurrences(of: "queue = \"nix\"", with: "queue = \"nix\", cpu = \"x86\""))
        let planFile = (changed as NSString).deletingLastPathComponent + "/plan.json"
        let plan = FleetHarness.bkfleet(["plan", changed, "--out", planFile])
        XCTAssertEqual(plan.status, 0, plan.all)
        let token = FleetHarness.tokenValue()
        XCTAssertFalse(FleetHarness.read(planFile).contains(token), "token in the plan file")
        XCTAssertFalse(plan.all.contains(token), "token in plan output")

        // Someone edits builder-02 by hand after the plan was reviewed.
        FleetHarness.exec("builder-02", "echo '# by hand' >> /etc/nixos/bkfleet/builder.nix")
        let before = FleetHarness.exec("builder-02", "cat /etc/nixos/bkfleet/builder.nix").out
        let apply = FleetHarness.bkfleet(["apply", planFile])
        XCTAssertEqual(apply.status, 1, apply.all)
        XCTAssertTrue(apply.out.contains("differs from the saved plan"), apply.out)
        XCTAssertTrue(apply.out.contains("module builder.nix changed on the host"), apply.out)
        XCTAssertTrue(apply.out.range(of: #"changed\s+builder-01"#,
                                      options: .regularExpression) != nil, apply.out)
        XCTAssertTrue(apply.out.range(of: #"changed\s+builder-03"#,
                                      options: .regularExpression) != nil, apply.out)
        XCTAssertEqual(FleetHarness.exec("builder-02", "cat /etc/nixos/bkfleet/builder.nix").out,
                       before, "a refused host was changed")

        // A plan made from an inventory that changed since is refused as a whole.
        try (FleetHarness.read(changed) + "\n# edited\n")
            .write(toFile: changed, atomically: true, encoding: .utf8)
        let stale = FleetHarness.bkfleet(["apply", planFile])
        XCTAssertEqual(stale.status, 65, stale.all)
        XCTAssertTrue(stale.err.contains("changed since the plan"), stale.err)
    }
}
