// Runs that went wrong, and what the next run does: a folder that is not bkfleet's is
// refused untouched; a switch that failed is redone by the next apply even though the
// module files already match.
import Foundation
import XCTest

final class RecoveryFleetTests: XCTestCase {
    override func setUpWithError() throws {
        try FleetHarness.requireFleet()
        continueAfterFailure = true
    }

    func test_a_secret_dir_holding_other_files_is_refused_and_left_untouched() throws {
        FleetHarness.reset(["builder-03"])
        let before = FleetHarness.exec("builder-03", "ls -A /var/lib; stat -c %a /var/lib").out
        let text = FleetHarness.standardInventory()
            .replacingOccurrences(of: "verify_timeout = 45",
                                  with: "verify_timeout = 45\nsecret_dir = \"/var/lib\"")
        let result = FleetHarness.bkfleet(["apply", try FleetHarness.inventory(text),
                                           "--on", "builder-03"])
        XCTAssertEqual(result.status, 1, result.all)
        XCTAssertTrue(result.out.contains("/var/lib already holds files bkfleet did not put "
                                          + "there"), result.out)
        let after = FleetHarness.exec("builder-03", "ls -A /var/lib; stat -c %a /var/lib").out
        XCTAssertEqual(after, before, "bkfleet changed a folder that is not its own")
    }

    func test_a_failed_switch_is_redone_by_the_next_apply() throws {
        let inventory = try FleetHarness.inventory(FleetHarness.standardInventory())
        XCTAssertEqual(FleetHarness.bkfleet(["apply", inventory]).status, 0)
        let changed = try FleetHarness.inventory(FleetHarness.standardInventory()
            .replacingOccurrences(of: "queue = \"deploy\"",
                                  with: "queue = \"deploy\", lane = \"green\""))
        let fleet = FleetHarness.fleetScript
        XCTAssertEqual(FleetHarness.run(fleet, ["set", "builder-01", "fail-switch", "on"])
            .status, 0)
        // --no-rollback keeps the half-done state a killed or cut-off run would leave.
        let failed = FleetHarness.bkfleet(["apply", changed, "--on", "builder-01",
                                           "--no-rollback"])
        FleetHarness.run(fleet, ["set", "builder-01", "fail-switch", "off"])
        XCTAssertEqual(failed.status, 1, failed.all)
        XCTAssertTrue(failed.out.contains("at rebuild"), failed.out)

        // The module files now match the inventory, but the switch never happened.
        let plan = FleetHarness.bkfleet(["plan", changed, "--on", "builder-01",
                                         "--detailed-exitcode"])
        XCTAssertEqual(plan.status, 2, plan.all)
        XCTAssertTrue(plan.out.contains("an earlier switch did not finish"), plan.out)
        let again = FleetHarness.bkfleet(["apply", changed, "--on", "builder-01"])
        XCTAssertEqual(again.status, 0, again.all)
        XCTAssertTrue(again.out.contains("rebuilt"), again.out)
        XCTAssertTrue(again.out.contains("lane=green"), again.out)
        let settled = FleetHarness.bkfleet(["plan", changed, "--detailed-exitcode"])
        XCTAssertEqual(settled.status, 0, settled.all)
    }
}
