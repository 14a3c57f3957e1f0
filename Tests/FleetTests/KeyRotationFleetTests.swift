// `bkfleet rotate --ssh-key` end to end on the test fleet: every agent using the key gets
// the new one at the path its module binds (owner, mode, bytes by digest), the printed
// and saved public keys match, `--finish` drops the old key and a later apply changes
// nothing; a host whose agent will not start on the new key goes back to the old one.
import BKFleet
import Foundation
import XCTest

final class KeyRotationFleetTests: XCTestCase {
    let hosts = ["builder-01", "builder-02", "builder-03"]
    let hostKeyPath = "/var/lib/bkfleet/secrets/builder/ssh_key"

    override func setUpWithError() throws {
        try FleetHarness.requireFleet()
        continueAfterFailure = true
        FleetHarness.reset(hosts)
    }

    override func tearDown() {
        for host in hosts {
            FleetHarness.exec(host, "rm -rf /etc/systemd/system/buildkite-agent-builder.service.d"
                              + "/zz-key-test.conf && systemctl daemon-reload")
        }
    }

    // MARK: Helpers

    /// The standard inventory with the `deploy` key in a file of its own folder, holding
    /// a freshly generated key; returns the inventory and the key file's path.
    func inventory() throws -> (inventory: String, key: String) {
        let text = FleetHarness.standardInventory()
        // Never the fleet's own login key: the rotation replaces the file it names.
        let local = text.replacingOccurrences(
            of: "[ssh_keys.deploy]\nfile = \"@FLEET@/id_ed25519\"",
            with: "[ssh_keys.deploy]\nfile = \"deploy_key\"")
        XCTAssertNotEqual(local, text, "inventory template changed; update this test")
        let inventory = try FleetHarness.inventory(local)
        let key = (inventory as NSString).deletingLastPathComponent + "/deploy_key"
        let made = FleetHarness.run("/usr/bin/ssh-keygen",
                                    ["-q", "-t", "ed25519", "-N", "", "-C", "old", "-f", key])
        XCTAssertEqual(made.status, 0, made.all)
        try FileManager.default.removeItem(atPath: key + ".pub")
        return (inventory, key)
    }

    /// SHA-256 hex of a key as bkfleet pushes it (trailing newlines removed).
    func pushedDigest(ofFile path: String) -> String {
        let bytes = Array(FileManager.default.contents(atPath: path) ?? Data())
        // What apply pushes: the key with exactly one final newline (SecretReader).
        return Digest.sha256Hex(SecretReader.trimmingTrailingNewlines(bytes) + [0x0A])
    }

    /// SHA-256 hex of the key file on a host, its owner and mode; never its value.
    func hostKey(_ host: String) -> (digest: String, owner: String, mode: String) {
        let result = FleetHarness.exec(host, "sha256sum < \(hostKeyPath) | cut -c1-64; "
                                       + "stat -c '%U %a' \(hostKeyPath)")
        let lines = result.out.split(separator: "\n").map(String.init)
        guard lines.count == 2 else { return ("missing: \(result.err)", "", "") }
        let ownerMode = lines[1].split(separator: " ").map(String.init)
        return (lines[0], ownerMode.first ?? "", ownerMode.last ?? "")
    }

    /// What `ssh-keygen -l` says of a public key file: `SHA256:...`.
    func openSSHFingerprint(_ publicFile: String) -> String {
        let listed = FleetHarness.run("/usr/bin/ssh-keygen", ["-l", "-E", "sha256", "-f",
                                                              publicFile])
        let words = listed.out.split(separator: " ")
        return words.count > 1 ? String(words[1]) : "unreadable: \(listed.all)"
    }

    func mode(_ path: String) -> Int {
        let value = try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions]
        return (value as? NSNumber)?.intValue ?? -1
    }

    func agentsRunning(_ host: String) -> Bool {
        FleetHarness.exec(host, "systemctl is-active buildkite-agent-builder").out
            .trimmingCharacters(in: .whitespacesAndNewlines) == "active"
    }

    // MARK: Scenarios

    func test_key_rotation_round_trip_new_key_everywhere_then_finish_then_apply_is_quiet()
        throws {
        let (inventory, key) = try inventory()
        let oldDigest = pushedDigest(ofFile: key)
        let oldKeyText = try String(contentsOfFile: key, encoding: .utf8)
        let applied = FleetHarness.bkfleet(["apply", inventory])
        XCTAssertEqual(applied.status, 0, applied.all)
        for host in hosts { XCTAssertEqual(hostKey(host).digest, oldDigest, host) }

        // A dry run generates nothing.
        let dry = FleetHarness.bkfleet(["rotate", inventory, "--ssh-key", "--dry-run"])
        XCTAssertEqual(dry.status, 0, dry.all)
        XCTAssertTrue(dry.out.contains("would push the SSH key of builder on builder-03"),
                      dry.out)
        XCTAssertEqual(pushedDigest(ofFile: key), oldDigest, "a dry run changed the key file")
        XCTAssertFalse(FileManager.default.fileExists(atPath: key + ".previous"))

        let rotated = FleetHarness.bkfleet(["rotate", inventory, "--ssh-key", "--batch", "1"])
        XCTAssertEqual(rotated.status, 0, rotated.all)
        XCTAssertFalse(rotated.all.contains("PRIVATE KEY"), "a private key in the output")

        // Locally: new key 0600, old one kept beside it 0600, public key saved.
        let newDigest = pushedDigest(ofFile: key)
        XCTAssertNotEqual(newDigest, oldDigest, "the key file was not replaced")
        XCTAssertEqual(pushedDigest(ofFile: key + ".previous"), oldDigest)
        XCTAssertEqual(mode(key), 0o600)
        XCTAssertEqual(mode(key + ".previous"), 0o600)
        let publicLine = try String(contentsOfFile: key + ".pub", encoding: .utf8)
            .trimmingCharacters(in: .newlines)
        XCTAssertTrue(publicLine.hasPrefix("ssh-ed25519 "), publicLine)
        XCTAssertTrue(publicLine.hasSuffix(" bkfleet-builder"), publicLine)
        // The printed public key is the saved one, and it belongs to the new private key.
        XCTAssertTrue(rotated.out.contains(publicLine), rotated.out)
        XCTAssertTrue(rotated.out.contains(key + ".pub"), "says where it is saved")
        let derived = FleetHarness.run("/usr/bin/ssh-keygen", ["-y", "-f", key])
        XCTAssertEqual(derived.status, 0, derived.err)
        XCTAssertTrue(publicLine.hasPrefix(derived.out.trimmingCharacters(in: .newlines)),
                      "the .pub file is not the new key's public half")
        let fingerprint = openSSHFingerprint(key + ".pub")
        XCTAssertTrue(rotated.out.contains(fingerprint), "\(fingerprint) in \(rotated.out)")
        // Beside it, the `sha256:` form plan and status show, of the bytes pushed.
        let short = "(sha256:" + pushedDigest(ofFile: key).prefix(12) + ")"
        XCTAssertTrue(rotated.out.contains(fingerprint + " " + short), rotated.out)

        // On every host: the new key at the bound path, agent's user, 0400, running.
        for host in hosts {
            let found = hostKey(host)
            XCTAssertEqual(found.digest, newDigest, "\(host) does not hold the new key")
            XCTAssertEqual(found.owner, "buildkite-agent-builder", host)
            XCTAssertEqual(found.mode, "400", host)
            XCTAssertTrue(agentsRunning(host), host)
            XCTAssertTrue(rotated.out.contains("ok      \(host)"), rotated.out)
            let module = FleetHarness.exec(host, "cat /etc/nixos/bkfleet/builder.nix").out
            XCTAssertTrue(module.contains(hostKeyPath), "\(host): module binds another path")
            let sums = FleetHarness.exec(host, "find /var/lib/bkfleet -type f "
                                         + "-exec sha256sum {} +").out
            XCTAssertFalse(sums.contains(oldDigest), "\(host) keeps the old key somewhere")
        }
        // Registered: the run verifies it; status agrees.
        let status = FleetHarness.bkfleet(["status", inventory])
        XCTAssertEqual(status.status, 0, status.all)

        // --finish drops the old private key; the new one stays.
        let finished = FleetHarness.bkfleet(["rotate", inventory, "--ssh-key", "--finish"])
        XCTAssertEqual(finished.status, 0, finished.all)
        XCTAssertFalse(FileManager.default.fileExists(atPath: key + ".previous"))
        XCTAssertEqual(pushedDigest(ofFile: key), newDigest)
        XCTAssertFalse(finished.all.contains(oldKeyText), "old private key in the output")

        // A later apply reads the key file, which holds the new key: nothing to change.
        let again = FleetHarness.bkfleet(["apply", inventory])
        XCTAssertEqual(again.status, 0, again.all)
        XCTAssertTrue(again.out.contains("0 changed"), again.out)
    }

    func test_a_host_that_will_not_start_on_the_new_key_gets_the_old_one_back() throws {
        let (inventory, key) = try inventory()
        let oldDigest = pushedDigest(ofFile: key)
        let applied = FleetHarness.bkfleet(["apply", inventory])
        XCTAssertEqual(applied.status, 0, applied.all)

        // builder-03's agent refuses to start with any key but the old one.
        let breakIt = FleetHarness.exec("builder-03", """
            d=/etc/systemd/system/buildkite-agent-builder.service.d
            mkdir -p $d && cat > $d/zz-key-test.conf <<'X'
            [Service]
            ExecStartPre=+/bin/sh -c 'test "$$(sha256sum < \(hostKeyPath) | cut -c1-64)" = \
            \(oldDigest)'
            X
            systemctl daemon-reload
            """)
        XCTAssertEqual(breakIt.status, 0, breakIt.all)

        let failed = FleetHarness.bkfleet(["rotate", inventory, "--ssh-key", "--batch", "1"])
        XCTAssertNotEqual(failed.status, 0, failed.all)
        XCTAssertTrue(failed.out.contains("FAILED  builder-03"), failed.out)
        // Rotate shows `SHA256:… (sha256:…)`, both of the bytes pushed.
        let pushed = { (path: String) in
            SSHKeyFingerprint.both(pushed: SecretReader.trimmingTrailingNewlines(
                Array(FileManager.default.contents(atPath: path) ?? Data())) + [0x0A])
        }
        let oldPrint = pushed(key + ".previous")
        let newPrint = pushed(key)
        XCTAssertTrue(newPrint.hasPrefix(openSSHFingerprint(key + ".pub") + " (sha256:"),
                      newPrint)
        XCTAssertTrue(failed.out.contains("\(oldPrint): builder-03/builder"), failed.out)
        XCTAssertTrue(failed.out.contains(newPrint + ": "), failed.out)
        XCTAssertEqual(hostKey("builder-03").digest, oldDigest, "builder-03 not restored")
        XCTAssertTrue(agentsRunning("builder-03"), "builder-03 not running after restore")
        let newDigest = pushedDigest(ofFile: key)

        // Fixed, a rerun pushes the same new key instead of making another.
        XCTAssertEqual(FleetHarness.exec("builder-03", "rm /etc/systemd/system/"
            + "buildkite-agent-builder.service.d/zz-key-test.conf && systemctl daemon-reload")
            .status, 0)
        let rerun = FleetHarness.bkfleet(["rotate", inventory, "--ssh-key"])
        XCTAssertEqual(rerun.status, 0, rerun.all)
        XCTAssertTrue(rerun.out.contains("finishing an earlier rotation"), rerun.out)
        XCTAssertEqual(pushedDigest(ofFile: key), newDigest, "a second new key was made")
        for host in hosts { XCTAssertEqual(hostKey(host).digest, newDigest, host) }
    }

    /// OpenSSH must be able to load the key the agent finds (git over SSH uses it).
    func test_the_pushed_key_loads_with_openssh() throws {
        let (inventory, _) = try inventory()
        let rotated = FleetHarness.bkfleet(["apply", inventory])
        XCTAssertEqual(rotated.status, 0, rotated.all)
        let copy = NSTemporaryDirectory() + "bkfleet-keycheck-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: copy) }
        let bytes = FleetHarness.exec("builder-02", "cat \(hostKeyPath)").out
        _ = FileManager.default.createFile(atPath: copy, contents: Data(bytes.utf8),
                                           attributes: [.posixPermissions: 0o600])
        let loaded = FleetHarness.run("/usr/bin/ssh-keygen", ["-y", "-f", copy])
        XCTAssertEqual(loaded.status, 0, "ssh-keygen cannot load the pushed key: \(loaded.err)")
    }
}
