// The held command under the host lock, against a real local sshd: it answers up to its
// marker, keeps running while other commands use the same session, and ends when bkfleet
// releases it or the session goes away; a command that ends first reports its status.
import Foundation
import XCTest
@testable import BKFleet

final class SSHHeldCommandTests: XCTestCase {
    nonisolated(unsafe) static var server: LocalSSHD!
    nonisolated(unsafe) static var key = ""

    override class func setUp() {
        super.setUp()
        do {
            let dir = makeTestDirectory("bkfleet-held-keys")
            key = try makeKey(in: dir, name: "client")
            let pub = try String(contentsOfFile: key + ".pub", encoding: .utf8)
            server = try LocalSSHD(authorizedKeys: [pub.trimmingCharacters(in: .newlines)])
        } catch {
            fatalError("cannot set up the local sshd: \(error)")
        }
    }

    override class func tearDown() {
        server?.stop()
        super.tearDown()
    }

    func loggedIn() throws -> SSHSession {
        let session = try SSHSession.connect(
            to: SSHEndpoint(name: "127.0.0.1", address: "127.0.0.1", port: Self.server.port),
            timeout: 10)
        try session.authenticate(user: "root",
                                 identity: .file(path: Self.key, passphrase: nil))
        return session
    }

    /// Waits (bounded) until `path` exists.
    func appears(_ path: String) -> Bool {
        for _ in 0..<100 {
            if FileManager.default.fileExists(atPath: path) { return true }
            Thread.sleep(forTimeInterval: 0.1)
        }
        return false
    }

    func test_held_command_outlives_other_commands_and_ends_when_released() throws {
        let flag = makeTestDirectory("bkfleet-held") + "/ended"
        let session = try loggedIn()
        defer { session.close() }
        var seen: [String] = []
        let (held, result) = try session.startHeld(
            "echo first; echo end; cat >/dev/null; echo x > \(flag)", marker: "end",
            timeout: 10, label: "held") { seen.append($0) }
        XCTAssertNotNil(held)
        XCTAssertEqual(seen, ["first", "end"])
        XCTAssertEqual(result.stdoutText, "first\nend\n")
        // Another command on the same session while it holds on.
        XCTAssertEqual(try session.run("echo other", timeout: 10).stdoutText, "other\n")
        XCTAssertFalse(FileManager.default.fileExists(atPath: flag), "ended too early")
        held?.release()
        XCTAssertTrue(appears(flag), "still running after release")
    }

    func test_held_command_ends_when_its_session_closes() throws {
        let flag = makeTestDirectory("bkfleet-held") + "/ended"
        let session = try loggedIn()
        let (held, _) = try session.startHeld(
            "echo end; cat >/dev/null; echo x > \(flag)", marker: "end", timeout: 10,
            label: "held")
        XCTAssertNotNil(held)
        session.close()
        XCTAssertTrue(appears(flag), "still running after the session closed")
    }

    func test_a_command_that_ends_before_the_marker_reports_its_status() throws {
        let session = try loggedIn()
        defer { session.close() }
        let (held, result) = try session.startHeld(
            "echo busy; echo why >&2; exit 75", marker: "end", timeout: 10, label: "held")
        XCTAssertNil(held)
        XCTAssertEqual(result.exitStatus, 75)
        XCTAssertEqual(result.stdoutText, "busy\n")
        XCTAssertEqual(result.stderrText, "why\n")
    }
}
