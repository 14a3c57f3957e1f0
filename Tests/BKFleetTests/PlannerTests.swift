// What a plan contains for the situations an operator meets: a fresh host, a converged
// one, drift by hand, and an agent removed from the inventory.
import Foundation
import XCTest
@testable import BKFleet

final class PlannerTests: XCTestCase {
    let token = SecretValue(bytes: Array("tok-1".utf8))

    func desired() throws -> DesiredState { try Self.desired(token: token) }

    /// builder-01 with only agent `plain`, its token entry holding `token`.
    static func desired(token: SecretValue) throws -> DesiredState {
        let renderer = ModuleRenderer(
            templates: try Templates.load(directory: ModuleRendererTests.templatesDir))
        let inventory = try ModuleRendererTests.inventory()
        var secrets = SecretValues()
        secrets.tokens["default"] = token
        secrets.sshKeys["deploy"] = SecretValue(bytes: Array("key".utf8))
        var host = inventory.hosts[0]
        host.agents = ["plain"]
        return try DesiredState(host: host, inventory: inventory, renderer: renderer,
                                secrets: secrets)
    }

    /// A probe report as the remote script prints it.
    func probe(_ records: [String]) throws -> HostState {
        try HostState.parse((["proto\t1", "hostname\tbuilder-01", "now\t100"] + records
                             + ["end"]).joined(separator: "\n"))
    }

    func converged(_ desired: DesiredState, extra: [String] = []) -> [String] {
        var lines = ["keysgroup\tyes", "secretroot\troot\troot\t711",
                     "secretdir\tplain\tbuildkite-agent-plain\tbuildkite-agent-plain\t700",
                     "secret\tplain\ttoken\t\(token.sha256)\tbuildkite-agent-plain\t"
                        + "buildkite-agent-plain\t400",
                     "user\tplain\t990",
                     "unit\tplain\tLoadState=loaded", "unit\tplain\tActiveState=active",
                     "unit\tplain\tSubState=running", "unit\tplain\tNRestarts=0"]
        for (name, text) in desired.modules.files {
            lines.append("module\t\(name)\t\(Data(text.utf8).base64EncodedString())")
        }
        return lines + extra
    }

    func test_fresh_host_plans_every_module_secret_and_unit_and_a_handover() throws {
        let desired = try desired()
        let plan = Planner.plan(desired: desired, state: try probe(["keysgroup\tyes"]),
                                secretDir: "/var/lib/bkfleet/secrets")
        XCTAssertEqual(Set(plan.modules.map(\.file)), ["default.nix", "plain.nix"])
        XCTAssertTrue(plan.modules.allSatisfy { $0.action == .create })
        XCTAssertEqual(plan.secrets.map(\.agent), ["plain"])
        XCTAssertEqual(plan.secrets.first?.newSHA256, token.sha256)
        XCTAssertEqual(plan.units.map(\.action), [.start])
        XCTAssertEqual(plan.handover, ["plain"])
        XCTAssertTrue(plan.needsRebuild)
    }

    func test_fresh_host_secrets_stay_root_only_until_the_user_exists() throws {
        let desired = try desired()
        let state = try probe(["keysgroup\tyes"])
        let owner = Planner.secretOwnership(agent: desired.agents["plain"]!.profile, on: state)
        // Not group `keys`: every agent user is in it, so another agent could read it.
        XCTAssertEqual(owner, FileOwnership(owner: "root", group: "root", mode: "400"))
    }

    func test_converged_host_has_an_empty_plan() throws {
        let desired = try desired()
        let plan = Planner.plan(desired: desired, state: try probe(converged(desired)),
                                secretDir: "/var/lib/bkfleet/secrets")
        XCTAssertTrue(plan.isEmpty, "\(plan)")
        XCTAssertFalse(plan.needsRebuild)
    }

    func test_loosened_mode_is_repaired_without_rewriting_the_secret() throws {
        let desired = try desired()
        var lines = converged(desired)
        lines[3] = "secret\tplain\ttoken\t\(token.sha256)\tbuildkite-agent-plain\t"
            + "buildkite-agent-plain\t644"
        let plan = Planner.plan(desired: desired, state: try probe(lines),
                                secretDir: "/var/lib/bkfleet/secrets")
        XCTAssertTrue(plan.secrets.isEmpty)
        XCTAssertEqual(plan.ownership.map(\.path), ["/var/lib/bkfleet/secrets/plain/token"])
        XCTAssertEqual(plan.ownership.first?.to.mode, "400")
        XCTAssertFalse(plan.needsRebuild)
    }

    func test_replaced_token_is_rewritten_and_the_unit_restarted_by_bkfleet() throws {
        let desired = try desired()
        var lines = converged(desired)
        lines[3] = "secret\tplain\ttoken\t\(String(repeating: "0", count: 64))\t"
            + "buildkite-agent-plain\tbuildkite-agent-plain\t400"
        let plan = Planner.plan(desired: desired, state: try probe(lines),
                                secretDir: "/var/lib/bkfleet/secrets")
        XCTAssertEqual(plan.secrets.map(\.action), [.update])
        XCTAssertEqual(plan.units.map(\.actor), [.bkfleet])
        XCTAssertFalse(plan.needsRebuild)
    }

    func test_edited_module_is_rewritten_and_rebuilt() throws {
        let desired = try desired()
        var lines = converged(desired)
        lines.removeAll { $0.hasPrefix("module\tplain.nix") }
        lines.append("module\tplain.nix\t\(Data("{ }\n".utf8).base64EncodedString())")
        let plan = Planner.plan(desired: desired, state: try probe(lines),
                                secretDir: "/var/lib/bkfleet/secrets")
        XCTAssertEqual(plan.modules.map(\.action), [.update])
        XCTAssertEqual(plan.units.map(\.action), [.restart])
        XCTAssertTrue(plan.needsRebuild)
    }

    func test_stopped_unit_is_started() throws {
        let desired = try desired()
        var lines = converged(desired)
        lines.removeAll { $0.contains("ActiveState") || $0.contains("SubState") }
        lines += ["unit\tplain\tActiveState=inactive", "unit\tplain\tSubState=dead"]
        let plan = Planner.plan(desired: desired, state: try probe(lines),
                                secretDir: "/var/lib/bkfleet/secrets")
        XCTAssertEqual(plan.units.map(\.action), [.start])
        XCTAssertEqual(plan.units.first?.actor, .bkfleet)
    }

    func test_agent_gone_from_inventory_is_stopped_and_its_files_removed() throws {
        let desired = try desired()
        let old = "module\told.nix\t\(Data("{ }".utf8).base64EncodedString())"
        let lines = converged(desired, extra: [
            old, "secretdir\told\troot\troot\t700",
            "secret\told\ttoken\t\(token.sha256)\troot\troot\t400",
            "unit\told\tLoadState=loaded", "unit\told\tActiveState=active",
        ])
        let plan = Planner.plan(desired: desired, state: try probe(lines),
                                secretDir: "/var/lib/bkfleet/secrets")
        XCTAssertEqual(plan.removedAgents, ["old"])
        XCTAssertEqual(plan.modules.map(\.file), ["old.nix"])
        XCTAssertEqual(plan.modules.first?.action, .remove)
        XCTAssertTrue(plan.units.contains { $0.agent == "old" && $0.action == .stop })
    }

    func test_interrupted_switch_forces_a_rebuild_even_when_modules_match() throws {
        let desired = try desired()
        let plan = Planner.plan(desired: desired,
                                state: try probe(converged(desired, extra: ["pending\tyes"])),
                                secretDir: "/var/lib/bkfleet/secrets")
        XCTAssertTrue(plan.modules.isEmpty)
        XCTAssertTrue(plan.needsRebuild)
        XCTAssertFalse(plan.isEmpty)
    }

    func test_folder_holding_foreign_files_is_reported_and_never_marked() throws {
        let state = try probe(["folder\t/var/lib\tforeign", "folder\t/etc/nixos/bkfleet\tabsent"])
        XCTAssertEqual(Planner.foreignFolders(state, moduleDir: "/etc/nixos/bkfleet",
                                              secretDir: "/var/lib"), ["/var/lib"])
        let plan = Planner.plan(desired: try desired(), state: state, secretDir: "/var/lib")
        XCTAssertEqual(plan.foldersToMark, ["/etc/nixos/bkfleet"])
    }

    func test_probe_output_cut_short_is_an_error() {
        XCTAssertThrowsError(try HostState.parse("proto\t1\nhostname\tx\n"))
    }

    func test_unified_diff_shows_changed_lines_with_context() {
        let hunks = UnifiedDiff.hunks(old: "a\nb\nc\nd\n", new: "a\nB\nc\nd\ne\n", context: 1)
        XCTAssertEqual(hunks, ["@@ -1,4 +1,5 @@", " a", "-b", "+B", " c", " d", "+e"])
    }

    func test_plan_summary_line_counts_hosts_agents_tokens() throws {
        let desired = try desired()
        let plan = Planner.plan(desired: desired, state: try probe(["keysgroup\tyes"]),
                                secretDir: "/s")
        let reports = [HostReport(host: "a", outcome: .changed, plan: plan),
                       HostReport(host: "b", outcome: .unchanged, plan: HostPlan())]
        XCTAssertEqual(PlanPrinter.summary(reports),
                       "Plan: 1 host to change, 1 agent to add, 0 tokens to replace, 0 to remove.")
        XCTAssertEqual(PlanPrinter.summary([reports[1]]),
                       "No changes. The fleet matches the inventory.")
        // An empty shard read nothing: it must not claim the fleet matches.
        XCTAssertTrue(PlanPrinter.summary([]).hasPrefix("No host selected"))
    }
}
