// Faults on the test fleet: two runs on one host (the second waits, then fails naming the
// holder), the lock of a killed run taken over, a connection cut in the middle of the
// switch, rollback after a failed verification (with and without an earlier generation,
// verified again in full), a rollback that leaves an unchanged running agent alone,
// --no-rollback, and a small sample of the SIGKILL soak (Tests/soak/kill-apply.sh).
// Waits here poll for a state on the host; no assertion depends on how long a step took.
import Foundation
import XCTest

final class FaultFleetTests: XCTestCase {
    let host = "builder-02"

    override func setUpWithError() throws {
        try FleetHarness.requireFleet()
        continueAfterFailure = true
    }

    override func tearDown() {
        FleetHarness.run(FleetHarness.fleetScript, ["set", host, "rebuild-seconds", "0"])
        FleetHarness.run(FleetHarness.fleetScript, ["set", host, "fail-switch", "off"])
    }

    /// builder-02 alone with agent `builder`; `extra` goes into [defaults].
    func inventory(extra: String = "", token: String? = nil, tags: String = "queue = \"nix\"")
        throws -> String {
        var text = FleetHarness.standardInventory(hostsOverride: """
            [[hosts]]
            name = "builder-02"
            address = "10.250.0.12"
            agents = ["builder"]
            """)
            .replacingOccurrences(of: "verify_timeout = 45", with: "verify_timeout = 45\n"
                                  + extra)
            .replacingOccurrences(of: "tags = { queue = \"nix\" }", with: "tags = { \(tags) }")
        if let token {
            text = text.replacingOccurrences(of: "@FLEET@/tokens/default.token", with: token)
        }
        return try FleetHarness.inventory(text)
    }

    /// Starts `bkfleet ARGS` without waiting; output goes to files read at the end.
    func start(_ arguments: [String]) throws -> (Process, String) {
        let out = FileManager.default.temporaryDirectory
            .appendingPathComponent("bkfleet-fault-\(UUID().uuidString).out").path
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: FleetHarness.binary)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["NO_COLOR"] = "1"
        process.environment = env
        let handle = FileHandle(forWritingAtPath: out)!
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return (process, out)
    }

    /// Polls `script` on the host until it prints something (at most `tries` × 0.5 s).
    @discardableResult
    func waitFor(_ script: String, tries: Int = 240) -> String {
        for _ in 0..<tries {
            let out = FleetHarness.exec(host, script).out
                .trimmingCharacters(in: .whitespacesAndNewlines)
            if !out.isEmpty { return out }
            Thread.sleep(forTimeInterval: 0.5)
        }
        return ""
    }

    func generation() -> String {
        FleetHarness.exec(host, "readlink /nix/var/nix/profiles/system").out
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func tokenDigest() -> String {
        FleetHarness.exec(host, "sha256sum < /var/lib/bkfleet/secrets/builder/token "
                          + "| cut -c1-64").out.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func digest(ofFile path: String) -> String {
        let script = "tr -d '\\n' < \(path) | sha256sum | cut -c1-64"
        return FleetHarness.run("/bin/sh", ["-c", script]).out
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The agent's main process and its start, as systemd reports them.
    func agentProcess() -> String {
        FleetHarness.exec(host, "systemctl show -p MainPID -p ExecMainStartTimestampMonotonic "
                          + "buildkite-agent-builder").out
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func agentState() -> String {
        FleetHarness.exec(host, "systemctl is-active buildkite-agent-builder").out
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    // MARK: - Lock

    func test_a_second_run_waits_for_the_host_lock_then_fails_naming_the_holder() throws {
        FleetHarness.reset([host])
        FleetHarness.run(FleetHarness.fleetScript, ["set", host, "rebuild-seconds", "10"])
        let (first, firstOut) = try start(["apply", try inventory()])
        let holder = waitFor("grep -o 'run=[^ ]*' /run/bkfleet.lock 2>/dev/null")
        XCTAssertFalse(holder.isEmpty, "the first run never took the lock")

        let second = FleetHarness.bkfleet(["apply", try inventory(extra: "lock_timeout = 2")])
        first.waitUntilExit()
        XCTAssertNotEqual(second.status, 0, second.all)
        XCTAssertTrue(second.all.contains("host lock /run/bkfleet.lock is held by bkfleet run "
                                          + holder.dropFirst(4)), second.all)
        XCTAssertTrue(second.all.contains("(pid \(first.processIdentifier))"), second.all)
        XCTAssertTrue(second.all.contains("lock_timeout"), second.all)
        XCTAssertEqual(first.terminationStatus, 0, FleetHarness.read(firstOut))
        // The refused run wrote nothing: the first run's single switch is the only one.
        XCTAssertEqual(generation(), "system-1-link")
        // Released at the end: a plain rerun takes it at once.
        let third = FleetHarness.bkfleet(["apply", try inventory(extra: "lock_timeout = 2")])
        XCTAssertEqual(third.status, 0, third.all)
    }

    func test_the_lock_of_a_killed_run_is_taken_over_and_the_rerun_converges() throws {
        FleetHarness.reset([host])
        FleetHarness.run(FleetHarness.fleetScript, ["set", host, "rebuild-seconds", "6"])
        let (first, _) = try start(["apply", try inventory()])
        // Killed while its switch runs: the lock goes with its session, the switch not.
        XCTAssertFalse(waitFor("systemctl list-units --plain --no-legend --state=active "
                               + "'bkfleet-rebuild-*'").isEmpty, "no detached rebuild seen")
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()

        let rerun = FleetHarness.bkfleet(["apply", try inventory(extra: "lock_timeout = 30")])
        XCTAssertEqual(rerun.status, 0, rerun.all)
        XCTAssertEqual(agentState(), "active")
        XCTAssertEqual(tokenDigest(), digest(ofFile: FleetHarness.clientDir
                                              + "/tokens/default.token"))
    }

    // MARK: - Detached rebuild

    func test_a_connection_cut_mid_switch_does_not_stop_it_and_apply_reports_it() throws {
        FleetHarness.reset([host])
        FleetHarness.run(FleetHarness.fleetScript, ["set", host, "rebuild-seconds", "8"])
        let (run, out) = try start(["apply", try inventory()])
        // The sshd process serving bkfleet's session is the parent of the command that
        // started the switch and now waits for it.
        let sshd = waitFor("""
            for p in $(grep -lE 'bkfleet-rebuild-(star[t]|wai[t])' /proc/[0-9]*/cmdline \
                2>/dev/null); do
              p=${p#/proc/}; p=${p%/cmdline}
              awk '/^PPid:/ {print $2}' /proc/$p/status; break
            done
            """)
        XCTAssertFalse(sshd.isEmpty, "never saw bkfleet following the switch")
        // Parent of the wait command may be sudo-less sh; walk up to the sshd process.
        FleetHarness.exec(host, """
            p=\(sshd)
            while [ "$p" -gt 1 ] && ! grep -q '^sshd' /proc/$p/comm; do
              p=$(awk '/^PPid:/ {print $2}' /proc/$p/status); done
            [ "$p" -gt 1 ] && kill -9 "$p"
            """)
        run.waitUntilExit()
        let output = FleetHarness.read(out)
        XCTAssertEqual(run.terminationStatus, 0, output)
        XCTAssertTrue(output.contains("1 changed"), output)
        XCTAssertEqual(agentState(), "active")
        XCTAssertEqual(generation(), "system-1-link", "the switch ran once")
        let runDir = output.components(separatedBy: "Logs: ").last?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        let log = FleetHarness.read(runDir + "/\(host).log")
        XCTAssertTrue(log.contains("reconnected"), "host log: \(log)\noutput: \(output)")
    }

    // MARK: - Rollback

    func test_failed_verification_rolls_back_generation_modules_and_secrets() throws {
        FleetHarness.reset([host])
        let good = FleetHarness.bkfleet(["apply", try inventory()])
        XCTAssertEqual(good.status, 0, good.all)
        let module = FleetHarness.exec(host, "cat /etc/nixos/bkfleet/builder.nix").out
        let digestBefore = tokenDigest()

        let bad = FleetHarness.bkfleet(["apply", try inventory(
            token: try FleetHarness.badTokenFile(), tags: "queue = \"nix\", stage = \"blue\"")])
        XCTAssertNotEqual(bad.status, 0, bad.all)
        // The agent with an unknown token fails: in the switch itself, or at registration.
        XCTAssertTrue(bad.all.contains("buildkite-agent-builder.service")
                      || bad.all.contains("rejected its token"), bad.all)
        XCTAssertTrue(bad.all.contains("rolled back:"), bad.all)
        XCTAssertTrue(bad.all.contains("switched back to system-1-link"), bad.all)
        // Verified again in full after the rollback, registration included.
        XCTAssertTrue(bad.all.contains("builder running again, confined, registered as "
                                       + "\"builder-02-builder-1\" with tags [queue=nix"),
                      bad.all)
        XCTAssertEqual(generation(), "system-1-link")
        XCTAssertEqual(FleetHarness.exec(host, "cat /etc/nixos/bkfleet/builder.nix").out,
                       module)
        XCTAssertEqual(tokenDigest(), digestBefore)
        XCTAssertEqual(FleetHarness.exec(host, "stat -c '%U %a' "
                                         + "/var/lib/bkfleet/secrets/builder/token").out,
                       "buildkite-agent-builder 400\n")
        XCTAssertEqual(agentState(), "active")
        XCTAssertEqual(FleetHarness.exec(host, "ls /var/lib/bkfleet/backup").out, "",
                       "backup kept after a successful rollback")
        // And the host plans clean against the good inventory again.
        let again = FleetHarness.bkfleet(["apply", try inventory()])
        XCTAssertEqual(again.status, 0, again.all)
        XCTAssertTrue(again.out.contains("0 changed"), again.out)
    }

    func test_a_rollback_after_a_switch_that_activated_nothing_leaves_running_agents_alone()
        throws {
        FleetHarness.reset([host])
        let good = FleetHarness.bkfleet(["apply", try inventory()])
        XCTAssertEqual(good.status, 0, good.all)
        let process = agentProcess()
        XCTAssertFalse(process.contains("MainPID=0"), process)
        // The build fails before anything is activated: the agent keeps its process.
        FleetHarness.run(FleetHarness.fleetScript, ["set", host, "fail-switch", "on"])
        let bad = FleetHarness.bkfleet(["apply", try inventory(
            tags: "queue = \"nix\", stage = \"blue\"")])
        FleetHarness.run(FleetHarness.fleetScript, ["set", host, "fail-switch", "off"])
        XCTAssertEqual(bad.status, 1, bad.all)
        XCTAssertTrue(bad.all.contains("rolled back:"), bad.all)
        XCTAssertTrue(bad.all.contains("left builder running untouched"), bad.all)
        XCTAssertTrue(bad.all.contains("builder running again, confined, registered as"),
                      bad.all)
        XCTAssertEqual(agentProcess(), process, "the rollback restarted an unchanged agent")
        XCTAssertEqual(generation(), "system-1-link")
        XCTAssertFalse(FleetHarness.exec(host, "cat /etc/nixos/bkfleet/builder.nix").out
                        .contains("blue"), "the module was not put back")
    }

    func test_no_rollback_leaves_the_failed_host_for_inspection() throws {
        FleetHarness.reset([host])
        XCTAssertEqual(FleetHarness.bkfleet(["apply", try inventory()]).status, 0)
        let badToken = try FleetHarness.badTokenFile()
        let bad = FleetHarness.bkfleet(["apply", try inventory(
            token: badToken, tags: "queue = \"nix\", stage = \"blue\""), "--no-rollback"])
        XCTAssertNotEqual(bad.status, 0, bad.all)
        XCTAssertTrue(bad.all.contains("left as it is for inspection (--no-rollback)"),
                      bad.all)
        XCTAssertFalse(bad.all.contains("rolled back:"), bad.all)
        XCTAssertEqual(generation(), "system-2-link")
        XCTAssertEqual(tokenDigest(), digest(ofFile: badToken))
        XCTAssertTrue(FleetHarness.exec(host, "cat /etc/nixos/bkfleet/builder.nix").out
                        .contains("blue"))
        XCTAssertEqual(FleetHarness.exec(host, "stat -c '%U %a' /var/lib/bkfleet/backup").out,
                       "root 700\n")
    }

    func test_a_fresh_host_that_fails_is_rolled_back_to_no_agents() throws {
        FleetHarness.reset([host])
        let bad = FleetHarness.bkfleet(["apply",
                                        try inventory(token: try FleetHarness.badTokenFile())])
        XCTAssertNotEqual(bad.status, 0, bad.all)
        XCTAssertTrue(bad.all.contains("no earlier generation: rebuilt without bkfleet's "
                                       + "agents"), bad.all)
        XCTAssertNotEqual(agentState(), "active")
        XCTAssertEqual(FleetHarness.exec(host, "ls /etc/nixos/bkfleet").out, "default.nix\n")
        XCTAssertEqual(FleetHarness.exec(host, "find /var/lib/bkfleet/secrets -type f "
                                         + "! -name .bkfleet").out,
                       "")
        // A good apply afterwards converges from there.
        let good = FleetHarness.bkfleet(["apply", try inventory()])
        XCTAssertEqual(good.status, 0, good.all)
        XCTAssertEqual(agentState(), "active")
    }

    // MARK: - SIGKILL soak, small sample

    func test_sigkill_at_random_moments_never_leaves_a_broken_secret_or_module() throws {
        let result = FleetHarness.run(FleetHarness.repo + "/Tests/soak/kill-apply.sh", ["5"],
                                      environment: ["BKFLEET_BIN": FleetHarness.binary,
                                                    "SOAK_HOSTS": "builder-02"])
        XCTAssertEqual(result.status, 0, result.all)
        XCTAssertTrue(result.out.contains("5 passed, 0 failed"), result.all)
    }
}
