// The pure decisions of a rollback: which agents keep their process (same main PID and
// start as the probe saw) and the name and tags an agent registered with before the run,
// read from its log line. Not the rollback itself: FaultFleetTests runs that on a host.
@testable import BKFleet
import XCTest

final class RollbackCheckTests: XCTestCase {
    func unit(_ state: String, pid: String, started: String) -> UnitState {
        UnitState(properties: ["ActiveState": state, "SubState": "running", "MainPID": pid,
                               "ExecMainStartTimestamp": started])
    }

    func test_an_agent_keeps_its_process_only_with_the_same_pid_and_start() {
        let before = unit("active", pid: "412", started: "@1700000000")
        XCTAssertTrue(HostRun.sameProcess(before, unit("active", pid: "412",
                                                       started: "@1700000000")))
        XCTAssertFalse(HostRun.sameProcess(before, unit("active", pid: "977",
                                                        started: "@1700000050")))
        // A reused PID with another start time is another process.
        XCTAssertFalse(HostRun.sameProcess(before, unit("active", pid: "412",
                                                        started: "@1700000050")))
        XCTAssertFalse(HostRun.sameProcess(before, unit("failed", pid: "412",
                                                        started: "@1700000000")))
        XCTAssertFalse(HostRun.sameProcess(before, nil))
        XCTAssertFalse(HostRun.sameProcess(unit("active", pid: "0", started: "@1"),
                                           unit("active", pid: "0", started: "@1")))
    }

    func test_the_earlier_registration_is_read_from_the_last_log_line() {
        let lines = [
            "Successfully registered agent \"old-name\" with tags [queue=nix]",
            "Successfully registered agent \"builder-02-builder-1\" with tags "
                + "[queue=nix, os=linux]",
        ]
        let found = HostRun.loggedRegistration(lines)
        XCTAssertEqual(found?.name, "builder-02-builder-1")
        XCTAssertEqual(found?.tags, ["queue=nix", "os=linux"])
        XCTAssertEqual(HostRun.loggedRegistration(
            ["Successfully registered agent \"a\""])?.tags, [])
        XCTAssertNil(HostRun.loggedRegistration(["Buildkite rejected the registration"]))
    }
}
