// What a rotation says before it changes anything, tested without a fleet: a host it
// cannot plan (a closed loopback port) and a queue gap still leave a whole dry-run plan,
// followed by why the real run would refuse; key lines carry both fingerprints; the
// identity's passphrase is read once; a key rotation's run record says `rotate`. The
// fleet tests cover rotations against real hosts.
import Foundation
import XCTest
@testable import BKFleet

final class RotateDryRunTests: XCTestCase {
    private var folder = ""

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "bkfleet-rotate-dry-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder,
                                                withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: folder)
    }

    private func write(_ name: String, _ bytes: [UInt8], mode: mode_t = 0o600) throws {
        try SSHKeyFile.writeAtomically(folder + "/" + name, bytes, mode: mode,
                                       role: .sshKey(name))
    }

    /// One host at a closed loopback port running agent `linux` (queue `nix`, token
    /// `default`, SSH key `deploy` from a fresh `deploy_key`); `defaults` goes into
    /// [defaults].
    private func inventory(defaults: String = "") throws -> Inventory {
        try write("id", try SSHKeyGenerator.generate(comment: "login").privateKey)
        try write("default.token", Array("token-value\n".utf8))
        try write("known_hosts", [])
        try write("deploy_key", try SSHKeyGenerator.generate(comment: "agent").privateKey)
        let text = """
            version = 1

            [defaults]
            user = "root"
            identity_file = "id"
            known_hosts = "known_hosts"
            \(defaults)

            [tokens.default]
            file = "default.token"

            [ssh_keys.deploy]
            file = "deploy_key"

            [agents.linux]
            token = "default"
            ssh_key = "deploy"
            tags = { queue = "nix" }

            [[hosts]]
            name = "builder-01"
            address = "127.0.0.1"
            port = \(freeLoopbackPort())
            agents = ["linux"]
            """
        return try loadInventory(text, file: folder + "/inventory.toml")
    }

    private func renderer() throws -> ModuleRenderer {
        ModuleRenderer(templates: try Templates.load(directory: ModuleRendererTests.templatesDir))
    }

    private func request(_ inventory: Inventory, dryRun: Bool) -> RotateRequest {
        var request = RotateRequest(hosts: inventory.hosts, agents: nil)
        request.dryRun = dryRun
        return request
    }

    func test_key_dry_run_shows_its_plan_with_both_fingerprints_then_the_refusal() throws {
        let inventory = try inventory()
        // Extra final newlines: what is pushed (and fingerprinted) has exactly one.
        let key = try SSHKeyGenerator.generate(comment: "old")
        try write("deploy_key", key.privateKey + Array("\n\n".utf8))
        let pushed = try SecretReader().resolve(.file(path: folder + "/deploy_key"),
                                                role: .sshKey("deploy"))
        var said: [String] = []
        let rotation = KeyRotation(inventory: inventory, renderer: try renderer(),
                                   request: request(inventory, dryRun: true),
                                   say: { said.append($0) })

        XCTAssertThrowsError(try rotation.run()) { error in
            XCTAssertEqual((error as? RotateRefused)?.queueGap, false, "\(error)")
        }
        let text = said.joined(separator: "\n")
        let both = SSHKeyFingerprint.of(privateKey: key.privateKey) + " ("
            + Digest.fingerprint(pushed) + ")"
        XCTAssertTrue(text.contains("SSH key 'deploy': \(both) → a new ed25519 key"), text)
        XCTAssertNotEqual(Digest.fingerprint(pushed),
                          Digest.fingerprint(key.privateKey + Array("\n\n".utf8)))
        let refusal = try XCTUnwrap(said.firstIndex(of: "the real run would refuse, and "
                                                        + "change nothing:"), text)
        XCTAssertLessThan(try XCTUnwrap(said.firstIndex(of: "dry run: nothing was changed")),
                          refusal, "the plan comes first")
        XCTAssertTrue(said[refusal + 1].contains("builder-01: cannot plan the key rotation"),
                      text)
        XCTAssertFalse(text.contains("PRIVATE KEY"), "never a private value")
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: folder)),
                       ["id", "default.token", "known_hosts", "deploy_key", ".bkfleet"],
                       "no key generated, no .previous or .pub written")

        let real = KeyRotation(inventory: inventory, renderer: try renderer(),
                               request: request(inventory, dryRun: false), say: { _ in })
        XCTAssertThrowsError(try real.run()) { error in
            XCTAssertTrue(error is RotateError, "\(error)")
            XCTAssertTrue("\(error)".hasSuffix("; nothing was changed"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/deploy_key.previous"))
    }

    func test_a_dry_run_meeting_a_queue_gap_still_gets_batches_then_says_the_gap() throws {
        let inventory = try inventory()
        let units = [RestartUnit(host: "builder-01", agent: "linux", queue: "nix")]
        let servers = ["nix": Set(["builder-01/linux"])]
        var said: [String] = []
        let dry = RotationRun(inventory: inventory, renderer: try renderer(),
                              request: request(inventory, dryRun: true), kind: .sshKey,
                              options: RunOptions(), say: { said.append($0) })
        let (batches, gap) = try dry.batches(hosts: ["builder-01"], units: units,
                                             servers: servers)
        XCTAssertEqual(batches, [["builder-01"]])
        XCTAssertEqual(gap, QueueGapError(queue: "nix", host: "builder-01"))
        XCTAssertThrowsError(try dry.refuseDryRun([], gap: gap)) { error in
            XCTAssertEqual((error as? RotateRefused)?.queueGap, true, "a usage error, as "
                           + "the real run's")
        }
        XCTAssertEqual(said.first, "the real run would refuse, and change nothing:")
        XCTAssertTrue(said.last?.contains("queue 'nix'") ?? false, "\(said)")
        XCTAssertNoThrow(try dry.refuseDryRun([], gap: nil), "nothing to refuse")

        let real = RotationRun(inventory: inventory, renderer: try renderer(),
                               request: request(inventory, dryRun: false), kind: .sshKey,
                               options: RunOptions(), say: { _ in })
        XCTAssertThrowsError(try real.batches(hosts: ["builder-01"], units: units,
                                              servers: servers)) {
            XCTAssertTrue($0 is QueueGapError, "\($0)")
        }
    }

    func test_a_key_rotation_records_rotate_on_the_host_like_a_token_rotation() throws {
        let inventory = try inventory()
        let keys = KeyRotation(inventory: inventory, renderer: try renderer(),
                               request: request(inventory, dryRun: false), say: { _ in })
        let tokens = TokenRotation(inventory: inventory, renderer: try renderer(),
                                   request: request(inventory, dryRun: false), say: { _ in })
        XCTAssertEqual(keys.rotation.options.recordAction, "rotate")
        XCTAssertEqual(tokens.rotation.options.recordAction, "rotate")
    }

    func test_token_rotation_reads_the_identity_passphrase_once() throws {
        let counter = folder + "/asked"
        let inventory = try inventory(defaults: """
            identity_passphrase = { command = "echo asked >> '\(counter)'; echo pass" }
            """)
        var said: [String] = []
        let rotation = TokenRotation(inventory: inventory, renderer: try renderer(),
                                     request: request(inventory, dryRun: true),
                                     say: { said.append($0) })
        // The host cannot be reached, so the dry run ends refused; both the secret check
        // and the host runs needed the identity by then.
        XCTAssertThrowsError(try rotation.run()) {
            XCTAssertTrue($0 is RotateRefused, "\($0)")
        }
        XCTAssertTrue(said.contains { $0.contains("builder-01: cannot plan the rotation") },
                      said.joined(separator: "\n"))
        let asked = try String(contentsOfFile: counter, encoding: .utf8)
        XCTAssertEqual(asked.split(separator: "\n").count, 1, "passphrase read \(asked)")
    }
}
