// The push script, run by the local /bin/sh exactly as a host runs it: files land
// atomically with their owner and mode, input cut short leaves no temporary file, and
// paths outside bkfleet's folders are refused.
import Foundation
import XCTest
@testable import BKFleet

final class PushScriptTests: XCTestCase {
    var root: String = ""
    var modules: String { root + "/modules" }
    var secrets: String { root + "/secrets" }

    override func setUpWithError() throws {
        root = FileManager.default.temporaryDirectory
            .appendingPathComponent("bkfleet-push-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: root)
    }

    func push(_ stdin: [UInt8]) throws -> (Int32, String) {
        let result = try runScript(RemoteScripts.push, [modules, secrets], stdin: stdin)
        return (result.status, result.err)
    }

    func mode(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as! NSNumber)
            .intValue
    }

    func leftovers() -> [String] {
        (FileManager.default.enumerator(atPath: root)?.allObjects as? [String] ?? [])
            .filter { $0.contains("bkfleet-tmp") }
    }

    func test_secret_is_written_with_its_final_mode_and_exact_bytes() throws {
        var batch = PushBatch()
        let owner = FileOwnership(owner: "root", group: "root", mode: "400")
        batch.dir(secrets, FileOwnership(owner: "root", group: "root", mode: "711"))
        batch.dir(secrets + "/a", FileOwnership(owner: "root", group: "root", mode: "700"))
        let value: [UInt8] = Array("tok\nwith newline and ' quote".utf8) + [0xFF, 0x00, 0x41]
        batch.write(secrets + "/a/token", owner, value)
        let (status, err) = try push(batch.payload())
        XCTAssertEqual(status, 0, err)
        XCTAssertEqual(Array(FileManager.default.contents(atPath: secrets + "/a/token")!), value)
        XCTAssertEqual(try mode(secrets + "/a/token"), 0o400)
        XCTAssertEqual(try mode(secrets + "/a"), 0o700)
        XCTAssertEqual(try mode(secrets), 0o711)
        XCTAssertEqual(leftovers(), [])
    }

    func test_replacing_a_secret_swaps_it_whole() throws {
        var batch = PushBatch()
        let owner = FileOwnership(owner: "root", group: "root", mode: "400")
        batch.dir(secrets + "/a", owner)
        batch.write(secrets + "/a/token", owner, Array("old".utf8))
        XCTAssertEqual(try push(batch.payload()).0, 0)
        var second = PushBatch()
        second.write(secrets + "/a/token", owner, Array("new-value".utf8))
        XCTAssertEqual(try push(second.payload()).0, 0)
        XCTAssertEqual(String(decoding: FileManager.default.contents(
            atPath: secrets + "/a/token")!, as: UTF8.self), "new-value")
    }

    func test_input_cut_short_leaves_the_old_secret_and_no_temporary_file() throws {
        var first = PushBatch()
        let owner = FileOwnership(owner: "root", group: "root", mode: "400")
        first.dir(secrets + "/a", owner)
        first.write(secrets + "/a/token", owner, Array("old".utf8))
        XCTAssertEqual(try push(first.payload()).0, 0)
        // Announce 100 bytes, send 10, then the connection "drops" (EOF).
        let cut = Array("write \(secrets)/a/token root root 400 100\n0123456789".utf8)
        let (status, err) = try push(cut)
        XCTAssertNotEqual(status, 0)
        XCTAssertTrue(err.contains("ended early"), err)
        XCTAssertEqual(String(decoding: FileManager.default.contents(
            atPath: secrets + "/a/token")!, as: UTF8.self), "old")
        XCTAssertEqual(leftovers(), [])
    }

    func test_paths_outside_the_managed_folders_are_refused() throws {
        for path in ["/etc/passwd", secrets + "/../escape", root + "/other"] {
            let (status, err) = try push(Array("rm \(path) - - - 0\nend\n".utf8))
            XCTAssertEqual(status, 2, path)
            XCTAssertTrue(err.contains("refusing path"), err)
        }
    }

    func test_stale_temporary_files_from_a_killed_run_are_removed() throws {
        try FileManager.default.createDirectory(atPath: secrets + "/a",
                                                withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: secrets + "/a/.token.bkfleet-tmp.abc123",
                                       contents: Data("partial".utf8))
        XCTAssertEqual(try push(Array("end\n".utf8)).0, 0)
        XCTAssertEqual(leftovers(), [])
    }

    func test_shell_quote_survives_the_shell() throws {
        let value = "it's a \"test\" with $HOME and `cmd` and \\ and ${x}"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "printf %s " + Shell.quote(value)]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        XCTAssertEqual(String(decoding: data, as: UTF8.self), value)
    }
}
