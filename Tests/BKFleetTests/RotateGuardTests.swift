// Guards around a rotation that need no fleet: one rotation at a time per token store,
// a hung store command stopped together with its children, and a host plan limited to
// the selected agents. Fleet scenarios are in Tests/FleetTests/RotateSubsetFleetTests.swift.
import Foundation
import XCTest
@testable import BKFleet

final class RotateGuardTests: XCTestCase {
    private var folder = ""

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "bkfleet-guard-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder,
                                                withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: folder)
    }

    func test_a_second_rotation_of_the_same_store_is_refused_naming_the_holder() throws {
        let store = TokenStore(location: .file(path: folder + "/t.json"), token: "default")
        XCTAssertEqual(store.lockPath, folder + "/t.json.lock")
        let held = try store.lock()
        XCTAssertThrowsError(try store.lock()) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("another rotation holds its lock"), text)
            XCTAssertTrue(text.contains("bkfleet pid \(getpid())"), text)
        }
        withExtendedLifetime(held) {}
    }

    func test_the_lock_is_free_again_once_the_rotation_lets_go() throws {
        let store = TokenStore(location: .file(path: folder + "/t.json"), token: "default")
        var held: TokenStoreLock? = try store.lock()
        XCTAssertNotNil(held)
        held = nil
        XCTAssertNoThrow(try store.lock())
    }

    func test_store_commands_lock_a_file_named_after_the_token() {
        let store = TokenStore(location: .commands(read: "true", write: "true"),
                               token: "ci")
        XCTAssertTrue(store.lockPath.hasSuffix("/bkfleet/token-ci.lock"), store.lockPath)
    }

    func test_a_hung_store_command_is_stopped_with_its_children() throws {
        let pidFile = folder + "/child.pid"
        let reader = SecretReader(commandTimeout: 1)
        XCTAssertThrowsError(try reader.runCommand(
            "sleep 300 & echo $! > \(pidFile); wait", input: [], role: .token("t")))
        let pid = try XCTUnwrap(Int32(String(contentsOfFile: pidFile, encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)))
        // Reaped by init once killed; a live child would still answer signal 0.
        var gone = false
        for _ in 0..<50 where !gone {
            gone = kill(pid, 0) != 0 || Self.isZombie(pid)
            if !gone { usleep(100_000) }
        }
        XCTAssertTrue(gone, "the command's child \(pid) survived")
        if !gone { kill(pid, SIGKILL) }
    }

    private static func isZombie(_ pid: Int32) -> Bool {
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        return stat.split(separator: ")").last?.trimmingCharacters(in: .whitespaces)
            .hasPrefix("Z") ?? true
    }

    func test_a_plan_limited_to_the_selection_leaves_other_agents_alone() {
        var plan = HostPlan()
        plan.secrets = [
            SecretChange(agent: "ra", kind: .token, action: .update, oldSHA256: "a",
                         newSHA256: "b"),
            SecretChange(agent: "rb", kind: .token, action: .update, oldSHA256: "b",
                         newSHA256: "a")]
        plan.units = [
            UnitChange(agent: "ra", action: .restart, actor: .bkfleet, reason: "secret changed"),
            UnitChange(agent: "rb", action: .restart, actor: .bkfleet, reason: "secret changed"),
            UnitChange(agent: "rc", action: .restart, actor: .rebuild, reason: "module changed")]
        let limited = plan.limited(to: ["ra"])
        XCTAssertEqual(limited.secrets.map(\.agent), ["ra"])
        XCTAssertEqual(limited.units.map(\.agent), ["ra", "rc"])
        // A module change still shows, so rotate still refuses the host.
        XCTAssertTrue(limited.needsRebuild)
    }
}
