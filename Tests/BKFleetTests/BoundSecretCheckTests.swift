// The refusal of inventories whose module-bound values carry a secret: each place a
// value reaches a module, each kind of secret, and that the message names the agent and
// key but never the value. The CLI's exit code 65 is covered by the last test, which
// runs the built binary when one is given.
import Foundation
import XCTest
@testable import BKFleet

final class BoundSecretCheckTests: XCTestCase {
    static let token = "bkct_9f8e7d6c5b4a39281706f5e4d3c2b1a0"
    static let key = """
        -----BEGIN OPENSSH PRIVATE KEY-----
        b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
        QyNTUxOQAAACBu1p0aXN0ZXN0a2V5b25seWZvcnRlc3RzAAAAAAAAAAAAAAAAAAAAAAAAAA
        -----END OPENSSH PRIVATE KEY-----
        """

    func inventory(agentLines: String) throws -> Inventory {
        try loadInventory("""
            version = 1
            [tokens.default]
            file = "default.token"
            [ssh_keys.deploy]
            file = "deploy.key"
            [agents.linux]
            token = "default"
            ssh_key = "deploy"
            \(agentLines)
            [[hosts]]
            name = "builder-01"
            address = "10.250.0.11"
            agents = ["linux"]
            """)
    }

    func secrets() -> SecretValues {
        var values = SecretValues()
        values.tokens["default"] = SecretValue(bytes: Array(Self.token.utf8))
        values.sshKeys["deploy"] = SecretValue(bytes: Array(Self.key.utf8))
        return values
    }

    func problems(_ agentLines: String, apiToken: String? = nil,
                  passphrase: String? = nil) throws -> [String] {
        let inventory = try inventory(agentLines: agentLines)
        let identity: SSHIdentity = .file(path: "/k",
                                          passphrase: passphrase.map { Array($0.utf8) })
        let known = BoundSecretCheck.known(secrets(), apiToken: apiToken.map { Array($0.utf8) },
                                           identity: identity)
        return BoundSecretCheck.problems(hosts: inventory.hosts, inventory: inventory,
                                         known: known)
    }

    func test_a_clean_inventory_passes() throws {
        XCTAssertEqual(try problems("""
            tags = { queue = "nix" }
            extra_config = "endpoint=https://agent.buildkite.test/v3"
            hooks = { environment = "export A=1" }
            """), [])
    }

    func test_token_in_a_tag_is_refused_naming_agent_and_key_not_the_value() throws {
        let found = try problems("tags = { queue = \"x-\(Self.token)\" }")
        XCTAssertEqual(found.count, 1)
        let message = try XCTUnwrap(found.first)
        XCTAssertTrue(message.contains("agent 'linux'"), message)
        XCTAssertTrue(message.contains("tags.queue"), message)
        XCTAssertTrue(message.contains("token 'default'"), message)
        XCTAssertTrue(message.contains(Digest.fingerprint(Array(Self.token.utf8))), message)
        XCTAssertTrue(message.hasPrefix("/srv/fleet/inventory.toml:"), message)
        XCTAssertFalse(message.contains(Self.token), "the message must not show the value")
    }

    func test_token_in_extra_config_hooks_and_display_name_is_refused() throws {
        let found = try problems("""
            extra_config = "token=\(Self.token)"
            hooks = { environment = "export T=\(Self.token)" }
            name = "ci-\(Self.token)"
            """)
        XCTAssertEqual(found.count, 3, found.joined(separator: "\n"))
        XCTAssertTrue(found.contains { $0.contains("extra_config") })
        XCTAssertTrue(found.contains { $0.contains("hooks.environment") })
        XCTAssertTrue(found.contains { $0.contains(": name holds") })
        XCTAssertFalse(found.joined().contains(Self.token))
    }

    func test_a_pasted_line_of_an_ssh_key_is_refused() throws {
        let line = Self.key.split(separator: "\n")[1]
        let found = try problems("hooks = { pre-command = \"echo \(line) > k\" }")
        XCTAssertEqual(found.count, 1)
        XCTAssertTrue(found[0].contains("SSH key 'deploy'"), found[0])
        XCTAssertFalse(found[0].contains(line))
    }

    func test_pem_armour_alone_is_not_a_secret() throws {
        XCTAssertEqual(try problems("""
            hooks = { pre-command = "grep -q -- '-----BEGIN OPENSSH PRIVATE KEY-----' f" }
            """), [])
    }

    func test_api_token_and_identity_passphrase_count_as_secrets() throws {
        let api = "bkua_0123456789abcdef0123456789abcdef"
        let found = try problems("extra_config = \"x=\(api)\"\ntags = { p = \"hunter2pass\" }",
                                 apiToken: api, passphrase: "hunter2pass")
        XCTAssertEqual(found.count, 2, found.joined(separator: "\n"))
        XCTAssertTrue(found.contains { $0.contains("the Buildkite API token") })
        XCTAssertTrue(found.contains { $0.contains("the identity passphrase") })
    }

    func test_short_secrets_match_only_a_whole_value() throws {
        var values = SecretValues()
        values.tokens["default"] = SecretValue(bytes: Array("abc".utf8))
        let inventory = try inventory(agentLines: "tags = { a = \"abcdef\", b = \"abc\" }")
        let found = BoundSecretCheck.problems(
            hosts: inventory.hosts, inventory: inventory,
            known: BoundSecretCheck.known(values))
        XCTAssertEqual(found.count, 1, found.joined(separator: "\n"))
        XCTAssertTrue(found[0].contains("tags.b"), found[0])
    }

    func test_agents_on_unselected_hosts_are_not_checked() throws {
        let inventory = try inventory(agentLines: "tags = { q = \"\(Self.token)\" }")
        XCTAssertEqual(BoundSecretCheck.problems(
            hosts: [], inventory: inventory, known: BoundSecretCheck.known(secrets())), [])
        XCTAssertThrowsError(try BoundSecretCheck.refuse(
            hosts: inventory.hosts, inventory: inventory,
            known: BoundSecretCheck.known(secrets()))) { error in
            guard case SetupError.boundSecret = error else {
                return XCTFail("expected SetupError.boundSecret, got \(error)")
            }
        }
    }

    /// The whole command: `plan` refuses with exit 65 before connecting (the host is
    /// the fleet's empty address, so a connection attempt would fail differently).
    func test_cli_refuses_with_exit_65_before_any_connection() throws {
        guard let binary = ProcessInfo.processInfo.environment["BKFLEET_BIN"] else {
            throw XCTSkip("set BKFLEET_BIN to the built bkfleet to run the CLI test")
        }
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("bkfleet-bound-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try Self.token.write(to: dir.appendingPathComponent("default.token"), atomically: true,
                             encoding: .utf8)
        try "".write(to: dir.appendingPathComponent("known_hosts"), atomically: true,
                     encoding: .utf8)
        try """
            version = 1
            [defaults]
            known_hosts = "known_hosts"
            ssh_agent = true
            [tokens.default]
            file = "default.token"
            [agents.linux]
            token = "default"
            tags = { queue = "\(Self.token)" }
            [[hosts]]
            name = "builder-99"
            address = "10.250.0.99"
            agents = ["linux"]
            """.write(to: dir.appendingPathComponent("inventory.toml"), atomically: true,
                      encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["plan", dir.appendingPathComponent("inventory.toml").path]
        let err = Pipe(), out = Pipe()
        process.standardError = err
        process.standardOutput = out
        try process.run()
        let errText = String(decoding: err.fileHandleForReading.readDataToEndOfFile(),
                             as: UTF8.self)
        let outText = String(decoding: out.fileHandleForReading.readDataToEndOfFile(),
                             as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 65, errText + outText)
        XCTAssertTrue(errText.contains("agent 'linux': tags.queue holds the value of "
                                       + "token 'default'"), errText)
        XCTAssertFalse((errText + outText).contains(Self.token))
        XCTAssertFalse(FileManager.default.fileExists(
            atPath: dir.appendingPathComponent(".bkfleet/runs").path),
                       "refused before the run's log folder exists")
    }
}

/// `RunContext.scrub`, which every stored or shown command output passes.
final class ScrubTests: XCTestCase {
    func context() throws -> RunContext {
        var values = SecretValues()
        values.tokens["default"] = SecretValue(bytes: Array(BoundSecretCheckTests.token.utf8))
        values.sshKeys["deploy"] = SecretValue(bytes: Array(BoundSecretCheckTests.key.utf8))
        let inventory = try loadInventory(minimalInventory)
        return RunContext(
            inventory: inventory,
            renderer: ModuleRenderer(
                templates: try Templates.load(directory: ModuleRendererTests.templatesDir)),
            secrets: values, identity: .agent, options: RunOptions(),
            registrations: .agentLog, events: LineEventSink(verbose: false, write: { _ in }),
            runDirectory: "/nonexistent")
    }

    func test_whole_values_become_fingerprints() throws {
        let token = BoundSecretCheckTests.token
        let out = try context().scrub("error: token \(token) rejected\n\(token)")
        XCTAssertFalse(out.contains(token), out)
        let fingerprint = Digest.fingerprint(Array(token.utf8))
        XCTAssertEqual(out, "error: token [secret \(fingerprint)] rejected\n"
                       + "[secret \(fingerprint)]")
    }

    func test_a_single_line_of_a_key_is_removed_too() throws {
        let line = String(BoundSecretCheckTests.key.split(separator: "\n")[2])
        let out = try context().scrub("parse error near '\(line)'")
        XCTAssertFalse(out.contains(line), out)
        XCTAssertTrue(out.contains("[part of secret sha256:"), out)
        let armour = "-----BEGIN OPENSSH PRIVATE KEY-----"
        XCTAssertEqual(try context().scrub(armour), armour, "armour is not secret")
    }
}
