// SSH key rotation's local parts: the key file replaced with the old key kept beside it
// (modes, no temporary file left), the saved public key and its OpenSSH fingerprint,
// and the refusal of key sources bkfleet cannot write. Needs ssh-keygen (openssh-client);
// the fleet tests cover pushing the key to hosts.
import XCTest
@testable import BKFleet

final class KeyRotationTests: XCTestCase {
    private var folder = ""

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "bkfleet-keys-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder,
                                                withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: folder)
    }

    private func mode(_ path: String) throws -> Int {
        let value = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions]
        return (value as? NSNumber)?.intValue ?? -1
    }

    private func keygen(_ arguments: [String]) -> String {
        let process = Process()
        let path = ProcessInfo.processInfo.environment["PATH"]
        process.executableURL = URL(fileURLWithPath: SSHKeyGenerator.executable(
            "ssh-keygen", path: path) ?? "/usr/bin/ssh-keygen")
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try? process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    func test_install_keeps_the_old_key_beside_the_new_one_with_private_modes() throws {
        let path = folder + "/deploy_key"
        let file = SSHKeyFile(name: "deploy", path: path)
        let old = try SSHKeyGenerator.generate(comment: "old")
        try SSHKeyFile.writeAtomically(path, old.privateKey, mode: 0o600, role: .sshKey("x"))
        let new = try SSHKeyGenerator.generate(comment: "bkfleet-builder")

        try file.install(new)

        XCTAssertEqual(FileManager.default.contents(atPath: path).map(Array.init),
                       new.privateKey)
        XCTAssertEqual(FileManager.default.contents(atPath: path + ".previous")
                        .map(Array.init), old.privateKey)
        XCTAssertEqual(try mode(path), 0o600)
        XCTAssertEqual(try mode(path + ".previous"), 0o600)
        XCTAssertEqual(try mode(path + ".pub"), 0o644)
        XCTAssertEqual(try String(contentsOfFile: path + ".pub", encoding: .utf8),
                       new.publicKey + "\n")
        XCTAssertTrue(new.publicKey.hasPrefix("ssh-ed25519 "))
        XCTAssertTrue(new.publicKey.hasSuffix(" bkfleet-builder"))
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: folder)),
                       ["deploy_key", "deploy_key.previous", "deploy_key.pub"],
                       "no temporary file left beside the key")
        XCTAssertTrue(try file.read().inProgress)

        XCTAssertTrue(try file.dropPrevious())
        XCTAssertFalse(FileManager.default.fileExists(atPath: path + ".previous"))
        XCTAssertFalse(try file.read().inProgress)
        XCTAssertFalse(try file.dropPrevious(), "nothing left to drop")
    }

    func test_a_rotation_killed_after_keeping_the_old_key_is_not_in_progress() throws {
        let path = folder + "/k"
        let key = try SSHKeyGenerator.generate(comment: "c")
        try SSHKeyFile.writeAtomically(path, key.privateKey, mode: 0o600, role: .sshKey("k"))
        try SSHKeyFile.writeAtomically(path + ".previous", key.privateKey, mode: 0o600,
                                       role: .sshKey("k"))
        XCTAssertFalse(try SSHKeyFile(name: "k", path: path).read().inProgress,
                       "a next run must generate a key, not push the old one as new")
    }

    func test_fingerprint_matches_openssh_even_without_the_trailing_newline() throws {
        let key = try SSHKeyGenerator.generate(comment: "c")
        let pub = folder + "/k.pub"
        try (key.publicKey + "\n").write(toFile: pub, atomically: true, encoding: .utf8)
        let openssh = keygen(["-l", "-E", "sha256", "-f", pub]).split(separator: " ")
        XCTAssertGreaterThan(openssh.count, 1)
        let expected = String(openssh[1])
        XCTAssertTrue(expected.hasPrefix("SHA256:"))
        XCTAssertEqual(SSHKeyFingerprint.of(privateKey: key.privateKey), expected)
        XCTAssertEqual(SSHKeyFingerprint.of(
            privateKey: SecretReader.trimmingTrailingNewlines(key.privateKey)), expected)
        XCTAssertEqual(SSHKeyFingerprint.publicLine(ofPrivateKey: key.privateKey,
                                                    comment: "c"), key.publicKey)
    }

    func test_a_key_in_another_format_gets_the_short_digest_not_its_value() {
        let bytes = Array("-----BEGIN RSA PRIVATE KEY-----\nabc\n".utf8)
        XCTAssertEqual(SSHKeyFingerprint.of(privateKey: bytes), Digest.fingerprint(bytes))
    }

    private func rotation(keySource: String, agents: Set<String>? = nil) throws
        -> KeyRotation {
        let inventory = try loadInventory(minimalInventory
            .replacingOccurrences(of: "[agents.linux]\n", with: """
                [ssh_keys.deploy]
                \(keySource)

                [agents.linux]
                ssh_key = "deploy"

                """), file: folder + "/inventory.toml")
        let templates = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("templates").path
        let renderer = ModuleRenderer(templates: try Templates.load(directory: templates))
        return KeyRotation(inventory: inventory, renderer: renderer,
                           request: RotateRequest(hosts: inventory.hosts, agents: agents),
                           say: { _ in })
    }

    func test_env_and_command_key_sources_are_refused_naming_the_agent() throws {
        for source in ["env = \"DEPLOY_KEY\"", "command = \"pass show deploy\""] {
            XCTAssertThrowsError(try rotation(keySource: source).run(), source) { error in
                let message = "\(error)"
                XCTAssertTrue(error is SecretError, message)
                XCTAssertTrue(message.contains("agent linux"), message)
                XCTAssertTrue(message.contains("set file = "), message)
                XCTAssertTrue(message.contains("inventory.toml:"), "names the line: \(message)")
            }
            XCTAssertThrowsError(try rotation(keySource: source).finish(), source)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder),
                       [], "nothing written")
    }

    func test_the_login_identity_is_never_rotated() throws {
        let path = folder + "/id"
        let key = try SSHKeyGenerator.generate(comment: "login")
        try SSHKeyFile.writeAtomically(path, key.privateKey, mode: 0o600, role: .sshKey("k"))
        let inventory = try loadInventory(minimalInventory
            .replacingOccurrences(of: "version = 1\n",
                                  with: "version = 1\n[defaults]\nidentity_file = \"id\"\n")
            .replacingOccurrences(of: "[agents.linux]\n", with: """
                [ssh_keys.deploy]
                file = "id"

                [agents.linux]
                ssh_key = "deploy"

                """), file: folder + "/inventory.toml")
        let renderer = ModuleRenderer(templates: try Templates.load(directory: URL(
            fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("templates").path))
        let rotation = KeyRotation(inventory: inventory, renderer: renderer,
                                   request: RotateRequest(hosts: inventory.hosts, agents: nil),
                                   say: { _ in })
        XCTAssertThrowsError(try rotation.run()) {
            XCTAssertTrue("\($0)".contains("the file bkfleet logs in with"), "\($0)")
        }
        XCTAssertEqual(FileManager.default.contents(atPath: path).map(Array.init),
                       key.privateKey, "the login key was replaced")
    }

    func test_selecting_agents_without_a_key_is_refused() throws {
        let rotation = try rotation(keySource: "file = \"k\"", agents: ["other"])
        XCTAssertThrowsError(try rotation.run()) {
            XCTAssertTrue("\($0)".contains("no selected agent has an SSH key"), "\($0)")
        }
    }

    func test_finish_drops_only_the_previous_key() throws {
        let path = folder + "/k"
        let old = try SSHKeyGenerator.generate(comment: "old")
        let new = try SSHKeyGenerator.generate(comment: "new")
        try SSHKeyFile.writeAtomically(path, old.privateKey, mode: 0o600, role: .sshKey("k"))
        try SSHKeyFile(name: "deploy", path: path).install(new)
        var said: [String] = []
        let inventory = try loadInventory(minimalInventory
            .replacingOccurrences(of: "[agents.linux]\n", with: """
                [ssh_keys.deploy]
                file = "k"

                [agents.linux]
                ssh_key = "deploy"

                """), file: folder + "/inventory.toml")
        let renderer = ModuleRenderer(templates: try Templates.load(directory: URL(
            fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("templates").path))
        let finish = KeyRotation(inventory: inventory, renderer: renderer,
                                 request: RotateRequest(hosts: inventory.hosts, agents: nil),
                                 say: { said.append($0) })
        XCTAssertTrue(try finish.finish())
        XCTAssertFalse(FileManager.default.fileExists(atPath: path + ".previous"))
        XCTAssertEqual(FileManager.default.contents(atPath: path).map(Array.init),
                       new.privateKey)
        let text = said.joined(separator: "\n")
        XCTAssertTrue(text.contains(SSHKeyFingerprint.of(privateKey: old.privateKey)), text)
        XCTAssertFalse(text.contains("PRIVATE KEY"), "never a private value")
    }
}
