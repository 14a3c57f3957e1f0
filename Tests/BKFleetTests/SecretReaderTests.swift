// Reading a secret's value from its source: trailing newlines go, empty values and
// missing sources are refused with messages that name the secret and source but never
// contain the value.
import XCTest
@testable import BKFleet

final class SecretReaderTests: XCTestCase {
    private var folder: URL!

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory
            .appendingPathComponent("bkfleet-secret-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try FileManager.default.removeItem(at: folder)
    }

    private func write(_ name: String, _ bytes: [UInt8]) throws -> String {
        let url = folder.appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url.path
    }

    func test_file_secret_loses_all_trailing_newlines_and_crlf() throws {
        let path = try write("token", Array("tok\r\nen\r\n\n\r\n".utf8))
        let value = try SecretReader(environment: [:]).resolve(.file(path: path),
                                                               role: .token("default"))
        XCTAssertEqual(value, Array("tok\r\nen".utf8))
    }

    func test_ssh_key_ends_with_exactly_one_newline_as_openssh_needs() throws {
        let reader = SecretReader(environment: ["KEY": "-----BEGIN-----\nabc\n-----END-----"])
        let fromEnv = try reader.resolve(.environment(name: "KEY"), role: .sshKey("deploy"))
        XCTAssertEqual(fromEnv, Array("-----BEGIN-----\nabc\n-----END-----\n".utf8))
        let path = try write("key", Array("-----BEGIN-----\nabc\n-----END-----\n\n".utf8))
        let fromFile = try reader.resolve(.file(path: path), role: .sshKey("deploy"))
        XCTAssertEqual(fromFile, Array("-----BEGIN-----\nabc\n-----END-----\n".utf8))
    }

    func test_secret_keeps_leading_spaces_and_inner_newlines() {
        XCTAssertEqual(SecretReader.trimmingTrailingNewlines(Array(" a\nb \n".utf8)),
                       Array(" a\nb ".utf8))
        XCTAssertEqual(SecretReader.trimmingTrailingNewlines(Array("key\r".utf8)),
                       Array("key\r".utf8))
    }

    func test_missing_file_names_the_secret_the_path_and_what_to_do() {
        let path = folder.appendingPathComponent("absent.token").path
        XCTAssertThrowsError(try SecretReader(environment: [:])
            .resolve(.file(path: path), role: .token("default"))) { error in
            XCTAssertEqual("\(error)", "token 'default': cannot read file \(path) (No such "
                + "file or directory); create it or fix file = in [tokens.default]")
        }
    }

    func test_empty_file_is_refused() throws {
        let path = try write("empty", Array("\n\n".utf8))
        XCTAssertThrowsError(try SecretReader(environment: [:])
            .resolve(.file(path: path), role: .sshKey("x"))) { error in
            XCTAssertEqual("\(error)", "SSH key 'x' from file \(path) is empty; put the "
                + "secret there or change [ssh_keys.x]")
        }
    }

    func test_environment_secret_is_read_and_unset_variable_is_named() throws {
        let reader = SecretReader(environment: ["BK_TOKEN": "s3cr3t\n"])
        XCTAssertEqual(try reader.resolve(.environment(name: "BK_TOKEN"),
                                          role: .token("default")), Array("s3cr3t".utf8))
        XCTAssertThrowsError(try reader.resolve(.environment(name: "OTHER"),
                                                role: .apiToken)) { error in
            XCTAssertEqual("\(error)", "the Buildkite API token: environment variable OTHER "
                + "is not set; export it before running bkfleet or change api_token in "
                + "[buildkite]")
        }
    }

    func test_command_secret_is_its_stdout_without_trailing_newline() throws {
        let reader = SecretReader(environment: ["PATH": "/usr/bin:/bin", "PART": "cr3t"])
        let value = try reader.resolve(.command("printf 's3%s\\n' \"$PART\"; echo noise >&2"),
                                       role: .token("default"))
        XCTAssertEqual(value, Array("s3cr3t".utf8))
    }

    func test_failing_command_reports_status_but_neither_stdout_nor_stderr() {
        let reader = SecretReader(environment: ["PATH": "/usr/bin:/bin"])
        XCTAssertThrowsError(try reader.resolve(
            .command("echo s3cr3t; echo 'vault: permission denied' >&2; exit 3"),
            role: .sshKey("deploy"))) { error in
            let text = "\(error)"
            XCTAssertEqual(text, "SSH key 'deploy': command `echo s3cr3t; echo 'vault: "
                + "permission denied' >&2; exit 3` exited with status 3; run it by hand to "
                + "see why, or change [ssh_keys.deploy]")
        }
    }

    func test_command_printing_nothing_is_refused_as_empty() {
        let reader = SecretReader(environment: ["PATH": "/usr/bin:/bin"])
        XCTAssertThrowsError(try reader.resolve(.command("echo"), role: .token("t"))) {
            XCTAssertTrue("\($0)".contains("is empty"), "\($0)")
        }
    }

    func test_command_does_not_read_bkfleets_stdin() throws {
        let reader = SecretReader(environment: ["PATH": "/usr/bin:/bin"])
        let value = try reader.resolve(.command("cat; echo done"), role: .token("t"))
        XCTAssertEqual(value, Array("done".utf8))
    }

    func test_fifo_and_devices_are_refused_without_waiting() throws {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("bkfleet-fifo-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        XCTAssertEqual(mkfifo(dir + "/fifo", 0o600), 0)
        let reader = SecretReader(environment: [:])
        for path in [dir + "/fifo", "/dev/zero"] {
            XCTAssertThrowsError(try reader.resolve(.file(path: path), role: .token("t"))) {
                XCTAssertTrue("\($0)".contains("not a regular file"), "\($0)")
            }
        }
    }

    func test_command_that_outlives_its_timeout_is_stopped_and_its_output_dropped() {
        let reader = SecretReader(environment: ["PATH": "/usr/bin:/bin"], commandTimeout: 1)
        let started = Date()
        XCTAssertThrowsError(try reader.resolve(
            .command("trap '' TERM; sleep 30; echo late"), role: .token("t"))) {
            XCTAssertTrue("\($0)".contains("did not finish within 1 s"), "\($0)")
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 10,
                          "the reader waited for the command instead of stopping it")
    }
}
