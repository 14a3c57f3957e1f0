// The probe, run by the local /bin/sh exactly as a host runs it, over folders made here:
// what it reports of modules, secret folders and files (hash, owner, mode, time), of
// links planted where a secret belongs, and of the lock's run record, as bkfleet parses
// it. Each test runs under dash and under bash (NixOS's /bin/sh). Units are not looked
// at here (no agent runs on this machine); the fleet tests do.
import Foundation
import XCTest
@testable import BKFleet

final class ProbeScriptTests: XCTestCase {
    var root = ""
    var modules: String { root + "/modules" }
    var secrets: String { root + "/secrets" }
    let files = FileManager.default

    override func setUpWithError() throws {
        root = files.temporaryDirectory.appendingPathComponent("bkfleet-probe-\(UUID().uuidString)")
            .path
        try files.createDirectory(atPath: modules, withIntermediateDirectories: true)
        try files.createDirectory(atPath: secrets, withIntermediateDirectories: true)
        try write(modules + "/.bkfleet", "")
        try write(secrets + "/.bkfleet", "")
        chmod(secrets, 0o711)
    }

    override func tearDown() {
        try? files.removeItem(atPath: root)
    }

    func write(_ path: String, _ text: String, mode: mode_t = 0o644) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        chmod(path, mode)
    }

    /// The shells the scripts must work in: Debian's /bin/sh (dash) and NixOS's (bash).
    let shells = ["/bin/sh", "/bin/bash"]

    func sh(_ script: String, _ arguments: [String], stdin: String = "",
            shell: String = "/bin/sh") throws -> (status: Int32, out: String) {
        let result = try runScript(script, arguments, stdin: Array(stdin.utf8), shell: shell)
        return (result.status, result.out)
    }

    /// The probe's report, the same under every shell.
    func probe(_ agents: [String]) throws -> HostState {
        var outputs: [String] = []
        for shell in shells {
            let (status, out) = try sh(RemoteScripts.probe, [modules, secrets, "trouble"] + agents,
                                       shell: shell)
            XCTAssertEqual(status, 0, "\(shell): \(out)")
            outputs.append(out)
        }
        XCTAssertEqual(Set(outputs).count, 1, "the shells disagree: \(outputs)")
        return try HostState.parse(outputs[0])
    }

    var me: String { String(cString: getpwuid(getuid())!.pointee.pw_name) }
    var myGroup: String { String(cString: getgrgid(getgid())!.pointee.gr_name) }

    func mtime(_ path: String) throws -> Int {
        Int((try files.attributesOfItem(atPath: path)[.modificationDate] as! Date)
            .timeIntervalSince1970.rounded(.down))
    }

    func test_secret_files_report_hash_owner_mode_and_time() throws {
        try files.createDirectory(atPath: secrets + "/alpha", withIntermediateDirectories: false)
        chmod(secrets + "/alpha", 0o700)
        try write(secrets + "/alpha/token", "token-one\n", mode: 0o400)
        try write(secrets + "/alpha/ssh_key", "", mode: 0o440)
        try write(modules + "/alpha.nix", "{ ... }: { }\n")

        let state = try probe(["alpha"])
        let alpha = try XCTUnwrap(state.agents["alpha"])
        XCTAssertEqual(alpha.secrets[.token]?.sha256, Digest.sha256Hex("token-one\n"))
        XCTAssertEqual(alpha.secrets[.token]?.ownership,
                       FileOwnership(owner: me, group: myGroup, mode: "400"))
        // An empty file is still a file: reported with its hash, not as something else.
        XCTAssertEqual(alpha.secrets[.sshKey]?.sha256, Digest.sha256Hex(""))
        XCTAssertEqual(alpha.secrets[.sshKey]?.ownership.mode, "440")
        XCTAssertEqual(alpha.secretModified[.token], try mtime(secrets + "/alpha/token"))
        XCTAssertEqual(alpha.secretDir, FileOwnership(owner: me, group: myGroup, mode: "700"))
        XCTAssertEqual(state.secretRoot, FileOwnership(owner: me, group: myGroup, mode: "711"))
        XCTAssertEqual(state.modules["alpha.nix"], "{ ... }: { }\n")
        XCTAssertEqual(state.hostname,
                       try String(contentsOfFile: "/proc/sys/kernel/hostname", encoding: .utf8)
                        .trimmingCharacters(in: .whitespacesAndNewlines))
    }

    func test_links_and_odd_files_are_reported_without_being_read() throws {
        let outside = root + "/outside"
        try write(outside, "not for bkfleet", mode: 0o600)
        try files.createDirectory(atPath: secrets + "/alpha", withIntermediateDirectories: false)
        try files.createSymbolicLink(atPath: secrets + "/alpha/token", withDestinationPath: outside)
        try files.createDirectory(atPath: secrets + "/alpha/ssh_key",
                                  withIntermediateDirectories: false)
        // A whole agent folder replaced by a link.
        try files.createSymbolicLink(atPath: secrets + "/beta", withDestinationPath: root)

        let state = try probe(["alpha", "beta"])
        XCTAssertEqual(state.agents["alpha"]?.secrets[.token]?.sha256, "not-a-regular-file")
        XCTAssertEqual(state.agents["alpha"]?.secrets[.sshKey]?.sha256, "not-a-regular-file")
        XCTAssertNil(state.agents["alpha"]?.secretModified[.token])
        XCTAssertEqual(state.agents["beta"]?.secretDir?.owner, "symlink")
        XCTAssertNil(state.agents["beta"]?.secrets[.token])
    }

    func test_a_leftover_name_with_a_line_break_forges_no_record() throws {
        try files.createDirectory(atPath: secrets + "/alpha", withIntermediateDirectories: false)
        try write(secrets + "/alpha/token", "t", mode: 0o400)
        // What a build job could leave in its own folder: a line that would read as a
        // record of its own.
        try write(secrets + "/alpha/.x.bkfleet-tmp.1\nhostname\tevil", "")
        try files.createDirectory(atPath: secrets + "/alpha/.d.bkfleet-tmp.2",
                                  withIntermediateDirectories: false)
        let state = try probe(["alpha"])
        XCTAssertNotEqual(state.hostname, "evil")
        XCTAssertEqual(state.agents["alpha"]?.tempFiles,
                       [secrets + "/alpha/(a name with a line break or tab)"],
                       "one placeholder; a folder is not reported (the push leaves it)")
    }

    func test_agents_found_on_the_host_are_reported_with_the_wanted_ones() throws {
        // An agent the inventory no longer lists still has its folder and module here.
        for agent in ["alpha", "old"] {
            try files.createDirectory(atPath: secrets + "/" + agent,
                                      withIntermediateDirectories: false)
            try write(secrets + "/\(agent)/token", agent, mode: 0o400)
        }
        try write(modules + "/gone.nix", "{ }\n")
        let state = try probe(["alpha"])
        XCTAssertEqual(state.agents["old"]?.secrets[.token]?.sha256, Digest.sha256Hex("old"))
        XCTAssertEqual(state.agents["alpha"]?.secrets[.token]?.sha256, Digest.sha256Hex("alpha"))
        XCTAssertNotNil(state.modules["gone.nix"])
    }

    func test_lock_hold_writes_the_record_only_on_commit_and_frees_the_lock() throws {
        let lock = root + "/lock"
        let record = root + "/var/last-apply"
        // The lock's tail, with its fixed paths pointed into this test's folder.
        let hold = "lock=\(Shell.quote(lock)); exec 9>>\"$lock\"; flock -n 9 || exit 9\n"
            + "echo holder > \"$lock\"\n"
            + RemoteScripts.lockHold.replacingOccurrences(of: RemoteScripts.runRecord,
                                                          with: record)
                .replacingOccurrences(of: RemoteScripts.backupRoot, with: root + "/backup")

        for shell in shells {
            try? files.removeItem(atPath: root + "/var")
            var (status, out) = try sh(hold, [], stdin: "record time=1\nrecord run=x\n",
                                       shell: shell)
            XCTAssertEqual(status, 0, shell)
            XCTAssertEqual(out, "end\n")
            XCTAssertFalse(files.fileExists(atPath: record), "no commit, no record (\(shell))")
            XCTAssertEqual(try String(contentsOfFile: lock, encoding: .utf8), "",
                           "the lock file is marked free (\(shell))")

            (status, _) = try sh(hold, [], stdin: "record time=1\nrecord run=x y\ncommit\n",
                                 shell: shell)
            XCTAssertEqual(status, 0, shell)
            XCTAssertEqual(try String(contentsOfFile: record, encoding: .utf8),
                           "time=1\nrun=x y\n", shell)
            XCTAssertEqual(try files.contentsOfDirectory(atPath: root + "/var"), ["last-apply"])

            // A folder where the record belongs is not written into.
            try files.removeItem(atPath: record)
            try files.createDirectory(atPath: record, withIntermediateDirectories: false)
            (status, _) = try sh(hold, [], stdin: "record time=3\ncommit\n", shell: shell)
            XCTAssertEqual(status, 3, shell)
            XCTAssertEqual(try files.contentsOfDirectory(atPath: record), [], shell)
            try files.removeItem(atPath: record)

            // A record that cannot be written says so by its exit status.
            try files.removeItem(atPath: root + "/var")
            try write(root + "/var", "a file where the folder belongs")
            (status, _) = try sh(hold, [], stdin: "record time=2\ncommit\n", shell: shell)
            XCTAssertEqual(status, 3, shell)
        }
    }

    func test_lock_hold_drops_every_backup_only_on_commit() throws {
        let hold = "lock=\(Shell.quote(root + "/lock")); exec 9>>\"$lock\"\n"
            + RemoteScripts.lockHold.replacingOccurrences(of: RemoteScripts.backupRoot,
                                                          with: root + "/backup")
        for shell in shells {
            for run in ["run-1", "run-2"] {
                try files.createDirectory(atPath: root + "/backup/\(run)/files/etc",
                                          withIntermediateDirectories: true)
                try write(root + "/backup/\(run)/files/etc/x.nix", "old")
            }
            var (status, _) = try sh(hold, [], stdin: "dropbackups\n", shell: shell)
            XCTAssertEqual(status, 0, shell)
            XCTAssertEqual(try files.contentsOfDirectory(atPath: root + "/backup").sorted(),
                           ["run-1", "run-2"], "nothing goes without commit (\(shell))")
            (status, _) = try sh(hold, [], stdin: "dropbackups\ncommit\n", shell: shell)
            XCTAssertEqual(status, 0, shell)
            XCTAssertEqual(try files.contentsOfDirectory(atPath: root + "/backup"), [], shell)
        }
        // A link where the backups belong: nothing behind it is removed.
        try files.removeItem(atPath: root + "/backup")
        try files.createDirectory(atPath: root + "/elsewhere", withIntermediateDirectories: false)
        try write(root + "/elsewhere/keep.txt", "keep")
        try files.createSymbolicLink(atPath: root + "/backup",
                                     withDestinationPath: root + "/elsewhere")
        for shell in shells {
            _ = try sh(hold, [], stdin: "dropbackups\ncommit\n", shell: shell)
            XCTAssertTrue(files.fileExists(atPath: root + "/elsewhere/keep.txt"), shell)
        }
    }
}
