// Bad input changes nothing and says what is wrong: inventory mistakes stop the run
// before any connection; an unreachable host or a wrong host key stops only that host,
// and a host whose key does not match receives no secret.
import Foundation
import XCTest

final class BadInputFleetTests: XCTestCase {
    override func setUpWithError() throws {
        try FleetHarness.requireFleet()
    }

    func secretsOn(_ host: String) -> String {
        FleetHarness.exec(host, "ls -R /var/lib/bkfleet 2>/dev/null; true").out
    }

    func test_unknown_inventory_key_names_line_and_column_and_touches_nothing() throws {
        let text = FleetHarness.standardInventory()
            .replacingOccurrences(of: "address = \"10.250.0.12\"",
                                  with: "adress = \"10.250.0.12\"")
        let inventory = try FleetHarness.inventory(text)
        let result = FleetHarness.bkfleet(["apply", inventory])
        XCTAssertEqual(result.status, 65, result.all)
        XCTAssertTrue(result.err.range(of: #"inventory.toml:\d+:\d+: .*'adress'"#,
                                       options: .regularExpression) != nil, result.err)
        XCTAssertTrue(result.err.contains("did you mean 'address'"), result.err)
        XCTAssertEqual(result.out, "")
    }

    func test_missing_token_file_names_the_token_and_path_and_sends_nothing() throws {
        FleetHarness.reset(["builder-02"])
        let text = FleetHarness.standardInventory()
            .replacingOccurrences(of: "tokens/default.token", with: "tokens/missing.token")
        let result = FleetHarness.bkfleet(["apply", try FleetHarness.inventory(text)])
        XCTAssertEqual(result.status, 65, result.all)
        XCTAssertTrue(result.err.contains("token 'default'"), result.err)
        XCTAssertTrue(result.err.contains("missing.token"), result.err)
        XCTAssertEqual(secretsOn("builder-02"), "")
    }

    func test_invalid_agent_name_is_refused_with_its_position() throws {
        let text = FleetHarness.standardInventory()
            .replacingOccurrences(of: "[agents.deploy]", with: "[agents.\"../deploy\"]")
        let result = FleetHarness.bkfleet(["apply", try FleetHarness.inventory(text)])
        XCTAssertEqual(result.status, 65, result.all)
        XCTAssertTrue(result.err.contains("../deploy"), result.err)
    }

    func test_unreachable_host_fails_alone_while_the_others_converge() throws {
        let hosts = """
            [[hosts]]
            name = "builder-02"
            address = "10.250.0.12"
            agents = ["builder"]
            [[hosts]]
            name = "ghost"
            address = "10.250.0.99"
            agents = ["builder"]
            """
        let text = FleetHarness.standardInventory(hostsOverride: hosts)
            .replacingOccurrences(of: "verify_timeout = 45",
                                  with: "verify_timeout = 45\nconnect_timeout = 3")
        let result = FleetHarness.bkfleet(["apply", try FleetHarness.inventory(text)])
        XCTAssertEqual(result.status, 1, result.all)
        XCTAssertTrue(result.out.contains("ghost"), result.out)
        XCTAssertTrue(result.out.range(of: #"FAILED\s+ghost\s+at connect"#,
                                       options: .regularExpression) != nil, result.out)
        XCTAssertTrue(result.out.range(of: #"(ok|changed)\s+builder-02"#,
                                       options: .regularExpression) != nil, result.out)
    }

    func test_changed_host_key_refuses_the_host_before_any_secret_is_sent() throws {
        FleetHarness.reset(["builder-02"])
        // A known_hosts that pins builder-02's address to another host's key.
        let known = FleetHarness.read(FleetHarness.clientDir + "/known_hosts")
        let lines = known.split(separator: "\n").map(String.init)
        let other = lines.first { $0.hasPrefix("10.250.0.13 ") }!
        let swapped = lines.map { $0.hasPrefix("10.250.0.12 ")
            ? "10.250.0.12 " + other.dropFirst("10.250.0.13 ".count) : $0 }
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("bkfleet-hk-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try swapped.joined(separator: "\n").write(toFile: dir + "/known_hosts",
                                                  atomically: true, encoding: .utf8)
        let text = FleetHarness.standardInventory()
            .replacingOccurrences(of: "known_hosts = \"@FLEET@/known_hosts\"",
                                  with: "known_hosts = \"\(dir)/known_hosts\"")
        let result = FleetHarness.bkfleet(["apply", try FleetHarness.inventory(text),
                                           "--on", "builder-02"])
        XCTAssertEqual(result.status, 1, result.all)
        XCTAssertTrue(result.out.contains("HOST KEY CHANGED"), result.out)
        XCTAssertEqual(secretsOn("builder-02"), "", "a secret reached a host with a wrong key")
    }

    func test_rsa_identity_is_refused_with_the_reason_and_the_fix() throws {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("bkfleet-rsa-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let keygen = FleetHarness.run("/usr/bin/ssh-keygen",
                                      ["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f",
                                       dir + "/id_rsa"])
        XCTAssertEqual(keygen.status, 0, keygen.all)
        let text = FleetHarness.standardInventory()
            .replacingOccurrences(of: "identity_file = \"@FLEET@/id_ed25519\"",
                                  with: "identity_file = \"\(dir)/id_rsa\"")
        let result = FleetHarness.bkfleet(["apply", try FleetHarness.inventory(text),
                                           "--on", "builder-03"])
        XCTAssertEqual(result.status, 1, result.all)
        XCTAssertTrue(result.out.contains("RSA"), result.out)
        XCTAssertTrue(result.out.contains("ed25519"), result.out)
    }
}
