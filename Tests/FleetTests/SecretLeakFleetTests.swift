// Secrets on the test fleet: no secret on any process's command line or environment on a
// host during an apply or a rotate, rebuild output scrubbed before it is logged or shown,
// host keys (changed keys refused even with --accept-new-host-keys, unknown keys recorded
// only when asked), non-root SSH users, public-repository hardening on a real unit, and
// an inventory holding a secret refused by apply, retire and rotate before any byte is
// sent. Not the unit-level checks (BoundSecretCheckTests, ModuleEscapingTests).
import BKFleet
import Foundation
import XCTest

final class SecretLeakFleetTests: XCTestCase {
    override func setUpWithError() throws {
        try FleetHarness.requireFleet()
    }

    var token: String { FleetHarness.tokenValue() }
    var fingerprint: String { Digest.fingerprint(Array(token.utf8)) }

    /// Paths of files on `host` (outside /proc, /sys and the store) holding the token;
    /// the secret files bkfleet manages are the only allowed ones.
    func filesHoldingToken(_ host: String) -> [String] {
        // With no token on the host there is nothing to look for (an empty pattern would
        // match every file).
        let found = FleetHarness.exec(host, """
            t=$(cat /var/lib/bkfleet/secrets/*/token 2>/dev/null | head -n 1)
            [ -n "$t" ] || exit 0
            grep -rlF -- "$t" /etc /var /tmp /root /home /run 2>/dev/null; true
            """).out
        return found.split(separator: "\n").map(String.init)
            .filter { !$0.hasPrefix("/var/lib/bkfleet/secrets/") }
    }

    func secretsOn(_ host: String) -> String {
        FleetHarness.exec(host, "ls -R /var/lib/bkfleet/secrets 2>/dev/null; true").out
    }

    /// Only builder-02 and builder-03, each running `builder`.
    func inventory(user: String = "root", rebuild: String? = nil, extra: String = "",
                   hosts: [String] = ["builder-02"], knownHosts: String? = nil) throws -> String {
        let addresses = ["builder-01": "10.250.0.11", "builder-02": "10.250.0.12",
                         "builder-03": "10.250.0.13"]
        let entries = hosts.map { name in
            """
            [[hosts]]
            name = "\(name)"
            address = "\(addresses[name]!)"
            user = "\(user)"
            agents = ["builder"]
            \(rebuild.map { "rebuild_command = \"\($0)\"" } ?? "")
            """
        }.joined(separator: "\n")
        var text = FleetHarness.standardInventory(agentsExtra: extra, hostsOverride: entries)
        if let knownHosts {
            text = text.replacingOccurrences(of: "known_hosts = \"@FLEET@/known_hosts\"",
                                             with: "known_hosts = \"\(knownHosts)\"")
        }
        return try FleetHarness.inventory(text)
    }

    // MARK: Command lines and environments

    /// Samples every process's argv and environment on `host` while `body` runs, and
    /// returns each distinct NUL-separated word seen (joined by newlines).
    ///
    /// The watcher runs as a transient systemd unit on the host, not as a background job
    /// of `fleet exec`: Foundation's Process hands each child a socket whose closing
    /// tells it the child ended, so a background job inheriting it would keep
    /// `fleet exec` (and this test) waiting until the watcher ends, after the push.
    func watchProcesses(on host: String, during body: () throws -> Void) throws -> String {
        let dir = "/root/bkf-watch-\(UUID().uuidString.prefix(8))"
        let script = #"""
            import os, sys
            d = sys.argv[1]
            seen, me, rounds = set(), str(os.getpid()), 0
            while not os.path.exists(d + "/stop"):
                for p in os.listdir("/proc"):
                    if not p.isdigit() or p == me:
                        continue
                    for f in ("cmdline", "environ"):
                        try:
                            with open("/proc/%s/%s" % (p, f), "rb") as h:
                                seen.update(h.read().split(b"\0"))
                        except OSError:
                            pass
                rounds += 1
                if rounds == 1:
                    open(d + "/ready", "w").close()
            with open(d + "/seen.tmp", "wb") as h:
                h.write(b"\n".join(sorted(seen)))
            os.rename(d + "/seen.tmp", d + "/seen")
            """#
        let started = FleetHarness.run(FleetHarness.fleetScript, [
            "exec", host, "/bin/sh", "-c",
            "mkdir -m 700 \"$1\" && systemd-run --quiet --collect --unit=\"${1##*/}\" "
                + "python3 -c \"$2\" \"$1\"", "start", dir, script])
        XCTAssertEqual(started.status, 0, started.all)
        defer { FleetHarness.exec(host, "rm -rf \(dir)") }
        XCTAssertFalse(FleetHarness.exec(host, """
            i=0; while [ ! -e \(dir)/ready ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
            ls \(dir)/ready
            """).out.isEmpty, "the watcher never started sampling")
        try body()
        let seen = FleetHarness.exec(host, """
            touch \(dir)/stop
            i=0; while [ ! -e \(dir)/seen ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
            cat \(dir)/seen
            """)
        XCTAssertFalse(seen.out.isEmpty, "the watcher left nothing: \(seen.err)")
        return seen.out
    }

    /// Every value that must never be on a command line or in an environment: both
    /// fleet tokens and the long lines of the agent's SSH key.
    func secretValues() -> [String] {
        let keyLines = FleetHarness.read(FleetHarness.clientDir + "/id_ed25519")
            .split(separator: "\n").map(String.init)
            .filter { !$0.hasPrefix("-----") && $0.count >= 20 }
        XCTAssertFalse(keyLines.isEmpty)
        return [token, FleetHarness.tokenValue("second")] + keyLines
    }

    func test_no_secret_on_a_remote_command_line_or_environment_during_apply_and_rotate()
        throws {
        FleetHarness.reset(["builder-02"])
        let path = try inventory()
        var applied = CommandResult(status: -1, out: "", err: "")
        let duringApply = try watchProcesses(on: "builder-02") {
            applied = FleetHarness.bkfleet(["apply", path])
        }
        XCTAssertEqual(applied.status, 0, applied.all)
        // The watcher saw bkfleet's remote shell pushing, so an absence means something.
        XCTAssertTrue(duringApply.contains("bkfleet-push"), "no push seen during the apply")
        for value in secretValues() {
            XCTAssertFalse(duringApply.contains(value), "a secret was on a command line or in "
                           + "an environment during the apply")
        }

        // A file-sourced token rotates to what its source gives now: the second token.
        let rotated = try FleetHarness.inventory(FleetHarness.read(path)
            .replacingOccurrences(of: "/tokens/default.token", with: "/tokens/second.token"))
        var rotation = CommandResult(status: -1, out: "", err: "")
        let duringRotate = try watchProcesses(on: "builder-02") {
            rotation = FleetHarness.bkfleet(["rotate", rotated, "--on", "builder-02",
                                            "--allow-queue-gap"])
        }
        XCTAssertEqual(rotation.status, 0, rotation.all)
        XCTAssertTrue(duringRotate.contains("bkfleet-push"), "no push seen during the rotate")
        for value in secretValues() {
            XCTAssertFalse(duringRotate.contains(value), "a secret was on a command line or "
                           + "in an environment during the rotate")
        }
        XCTAssertFalse((applied.all + rotation.all).contains(token))
    }

    // MARK: Rebuild output

    func test_rebuild_output_holding_the_token_is_logged_and_shown_as_its_fingerprint() throws {
        FleetHarness.reset(["builder-03"])
        // A rebuild command that prints every agent token, then fails: its output reaches
        // both the host log and the failure message.
        let wrapper = FleetHarness.exec("builder-03", """
            cat > /usr/local/sbin/bkf-leaky-rebuild <<'EOF'
            #!/bin/sh
            for f in /var/lib/bkfleet/secrets/*/token; do echo "token is $(cat "$f")"; done
            exit 3
            EOF
            chmod 755 /usr/local/sbin/bkf-leaky-rebuild
            """)
        XCTAssertEqual(wrapper.status, 0, wrapper.all)
        defer { FleetHarness.exec("builder-03", "rm -f /usr/local/sbin/bkf-leaky-rebuild") }
        let result = FleetHarness.bkfleet([
            "apply", try inventory(rebuild: "/usr/local/sbin/bkf-leaky-rebuild switch",
                                   hosts: ["builder-03"]), "--no-rollback"])
        XCTAssertEqual(result.status, 1, result.all)
        XCTAssertTrue(result.out.contains("token is [secret \(fingerprint)]"), result.out)
        XCTAssertFalse(result.all.contains(token), "the token was shown")
        // Every file of the run's log folder: the fingerprint, never the value.
        let logs = try XCTUnwrap(result.out.range(of: #"Logs: \S+"#, options: .regularExpression)
            .map { String(result.out[$0].dropFirst(6)) })
        let files = try FileManager.default.contentsOfDirectory(atPath: logs)
        XCTAssertFalse(files.isEmpty)
        var sawFingerprint = false
        for file in files {
            let text = FleetHarness.read(logs + "/" + file)
            XCTAssertFalse(text.contains(token), "\(file) holds the token")
            sawFingerprint = sawFingerprint || text.contains("[secret \(fingerprint)]")
        }
        XCTAssertTrue(sawFingerprint, "the host log lacks the scrubbed rebuild output")
        // The host keeps the raw output for inspection, readable by root alone.
        let mode = FleetHarness.exec("builder-03", "stat -c %a /var/lib/bkfleet/runs").out
        XCTAssertEqual(mode.trimmingCharacters(in: .whitespacesAndNewlines), "700")
    }

    // MARK: Module-bound secrets

    func test_a_token_in_a_tag_is_refused_before_anything_is_sent() throws {
        FleetHarness.reset(["builder-02"])
        let path = try inventory(extra: "")
        let text = FleetHarness.read(path).replacingOccurrences(
            of: "tags = { queue = \"nix\" }", with: "tags = { queue = \"\(token)\" }")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let result = FleetHarness.bkfleet(["apply", path])
        XCTAssertEqual(result.status, 65, result.all)
        XCTAssertTrue(result.err.contains("agent 'builder': tags.queue holds the value of "
                                          + "token 'default'"), result.err)
        XCTAssertFalse(result.all.contains(token))
        XCTAssertEqual(secretsOn("builder-02"), "", "a secret reached the host")
        XCTAssertEqual(FleetHarness.exec("builder-02", "ls /etc/nixos/bkfleet 2>/dev/null; true")
            .out, "", "a module reached the host")
    }

    /// How many SSH logins the host's sshd accepted so far (from its journal).
    func acceptedLogins(_ host: String) -> String {
        FleetHarness.exec(host, "journalctl -q --no-pager | grep -c 'Accepted publickey'; true")
            .out.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func test_retire_and_rotate_refuse_a_token_in_a_tag_before_connecting() throws {
        FleetHarness.reset(["builder-02"])
        let path = try inventory(extra: "")
        let applied = FleetHarness.bkfleet(["apply", path])
        XCTAssertEqual(applied.status, 0, applied.all)
        let text = FleetHarness.read(path).replacingOccurrences(
            of: "tags = { queue = \"nix\" }", with: "tags = { queue = \"\(token)\" }")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let logins = acceptedLogins("builder-02")
        XCTAssertNotEqual(logins, "0", "the journal shows no login of the apply")
        for command in [["retire", "builder-02", "--inventory", path],
                        ["rotate", path, "--on", "builder-02"]] {
            let result = FleetHarness.bkfleet(command)
            XCTAssertEqual(result.status, 65, "\(command[0]): \(result.all)")
            XCTAssertTrue(result.err.contains("agent 'builder': tags.queue holds the value of "
                                              + "token 'default'"), result.err)
            XCTAssertFalse(result.all.contains(token))
        }
        XCTAssertEqual(acceptedLogins("builder-02"), logins, "a refused run connected")
        XCTAssertEqual(FleetHarness.exec("builder-02",
                                         "systemctl is-active buildkite-agent-builder").out,
                       "active\n", "the refused retire stopped the agent")
    }

    // MARK: Host keys

    func knownHosts(_ transform: ([String]) -> [String]) throws -> String {
        let lines = FleetHarness.read(FleetHarness.clientDir + "/known_hosts")
            .split(separator: "\n").map(String.init)
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("bkfleet-hk-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try (transform(lines).joined(separator: "\n") + "\n")
            .write(toFile: dir + "/known_hosts", atomically: true, encoding: .utf8)
        return dir + "/known_hosts"
    }

    func test_a_changed_host_key_refuses_even_with_accept_new_host_keys() throws {
        FleetHarness.reset(["builder-02"])
        let file = try knownHosts { lines in
            let other = lines.first { $0.hasPrefix("10.250.0.13 ") }!
            return lines.map { $0.hasPrefix("10.250.0.12 ")
                ? "10.250.0.12 " + other.dropFirst("10.250.0.13 ".count) : $0 }
        }
        let before = FleetHarness.read(file)
        let result = FleetHarness.bkfleet(["apply", try inventory(knownHosts: file),
                                           "--accept-new-host-keys"])
        XCTAssertEqual(result.status, 1, result.all)
        XCTAssertTrue(result.out.contains("HOST KEY CHANGED"), result.out)
        XCTAssertEqual(secretsOn("builder-02"), "", "a secret reached a host with a wrong key")
        XCTAssertEqual(filesHoldingToken("builder-02"), [])
        XCTAssertEqual(FleetHarness.read(file), before, "the pinned key was replaced")
    }

    func test_an_unknown_host_key_is_refused_unless_accepted_then_recorded() throws {
        FleetHarness.reset(["builder-02"])
        let file = try knownHosts { $0.filter { !$0.hasPrefix("10.250.0.12 ") } }
        let path = try inventory(knownHosts: file)
        let strict = FleetHarness.bkfleet(["apply", path])
        XCTAssertEqual(strict.status, 1, strict.all)
        XCTAssertTrue(strict.out.contains("unknown host key"), strict.out)
        XCTAssertEqual(secretsOn("builder-02"), "", "a secret reached an unverified host")

        let accepted = FleetHarness.bkfleet(["apply", path, "--accept-new-host-keys", "-v"])
        XCTAssertEqual(accepted.status, 0, accepted.all)
        XCTAssertTrue(accepted.all.contains("recorded new host key SHA256:"), accepted.all)
        let recorded = FleetHarness.read(file)
        // OpenSSH's form: the host field lists name and address, comma-separated.
        XCTAssertTrue(recorded.split(separator: "\n").contains { line in
            line.split(separator: " ").first?.split(separator: ",")
                .contains("10.250.0.12") == true }, recorded)
        // The recorded key now pins the host: a plain run converges without the flag.
        let again = FleetHarness.bkfleet(["apply", path])
        XCTAssertEqual(again.status, 0, again.all)
    }

    // MARK: Users without root

    func test_a_non_root_user_with_passwordless_sudo_applies_end_to_end() throws {
        FleetHarness.reset(["builder-02"])
        let result = FleetHarness.bkfleet(["apply", try inventory(user: "deploy")])
        XCTAssertEqual(result.status, 0, result.all)
        XCTAssertTrue(result.out.contains("1 agent(s) verified"), result.out)
        let owner = FleetHarness.exec("builder-02",
                                      "stat -c '%U %a' /var/lib/bkfleet/secrets/builder/token")
        XCTAssertEqual(owner.out.trimmingCharacters(in: .whitespacesAndNewlines),
                       "buildkite-agent-builder 400")
        XCTAssertFalse(result.all.contains(token))
    }

    func test_a_sudo_that_wants_a_password_fails_at_once_with_what_to_do() throws {
        FleetHarness.reset(["builder-02"])
        let path = try inventory(user: "deploy-pw")
        let text = FleetHarness.read(path).replacingOccurrences(
            of: "verify_timeout = 45", with: "verify_timeout = 45\ncommand_timeout = 30")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let result = FleetHarness.bkfleet(["apply", path])
        XCTAssertEqual(result.status, 1, result.all)
        XCTAssertTrue(result.out.contains("sudo on the host wants a password for deploy-pw"),
                      result.out)
        // Failing on sudo's own answer, not by running into the command timeout.
        XCTAssertFalse(result.out.lowercased().contains("timed out"), result.out)
        XCTAssertEqual(secretsOn("builder-02"), "")
    }

    // MARK: Public repositories

    func test_a_public_agent_runs_with_restricted_eval_and_without_repository_hooks() throws {
        FleetHarness.reset(["builder-02"])
        let path = try inventory()
        let text = FleetHarness.read(path).replacingOccurrences(
            of: "tags = { queue = \"nix\" }", with: "tags = { queue = \"nix\" }\npublic = true")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let result = FleetHarness.bkfleet(["apply", path])
        XCTAssertEqual(result.status, 0, result.all)
        let env = FleetHarness.exec("builder-02",
                                    "systemctl show -p Environment buildkite-agent-builder").out
        XCTAssertTrue(env.contains("restrict-eval = true"), env)
        let config = FleetHarness.exec(
            "builder-02", "cat /var/lib/buildkite-agent-builder/buildkite-agent.cfg").out
        for line in ["no-local-hooks=true", "no-plugins=true", "no-command-eval=true"] {
            XCTAssertTrue(config.contains(line), "\(line) missing from the agent config")
        }
        // Scoped to the unit: the host's own Nix configuration does not restrict eval.
        let nixConf = FleetHarness.exec("builder-02", "cat /etc/nix/nix.conf 2>/dev/null; true")
        XCTAssertFalse(nixConf.out.contains("restrict-eval"), nixConf.out)
    }
}
