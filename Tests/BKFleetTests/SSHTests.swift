// The SSH layer against real OpenSSH servers on 127.0.0.1: host keys, authentication,
// remote commands, failures a user meets, and a jump host. No timing assertions; the
// timeouts used only bound how long a failing test can hang.
import Foundation
import XCTest
@testable import BKFleet

final class SSHTests: XCTestCase {
    // One set of servers and keys for the whole class: starting sshd per test is slow.
    nonisolated(unsafe) static var keys = ""
    nonisolated(unsafe) static var clientKey = ""
    nonisolated(unsafe) static var clientPublic = ""
    nonisolated(unsafe) static var strangerKey = ""
    nonisolated(unsafe) static var lockedKey = ""
    nonisolated(unsafe) static var server: LocalSSHD!
    nonisolated(unsafe) static var target: LocalSSHD!

    static let passphrase = "correct horse battery"

    override class func setUp() {
        super.setUp()
        do {
            keys = makeTestDirectory("bkfleet-ssh-keys")
            clientKey = try makeKey(in: keys, name: "client")
            strangerKey = try makeKey(in: keys, name: "stranger")
            lockedKey = try makeKey(in: keys, name: "locked", passphrase: passphrase)
            clientPublic = try String(contentsOfFile: clientKey + ".pub", encoding: .utf8)
            let lockedPublic = try String(contentsOfFile: lockedKey + ".pub", encoding: .utf8)
            let authorized = [clientPublic, lockedPublic].map {
                $0.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            server = try LocalSSHD(authorizedKeys: authorized)
            target = try LocalSSHD(authorizedKeys: authorized)
        } catch {
            fatalError("cannot set up the local sshd: \(error)")
        }
    }

    override class func tearDown() {
        server?.stop()
        target?.stop()
        try? FileManager.default.removeItem(atPath: keys)
        super.tearDown()
    }

    private var endpoint: SSHEndpoint {
        SSHEndpoint(name: "127.0.0.1", address: "127.0.0.1", port: Self.server.port)
    }

    private func connected(_ endpoint: SSHEndpoint? = nil) throws -> SSHSession {
        try SSHSession.connect(to: endpoint ?? self.endpoint, timeout: 10, keepaliveSeconds: 5)
    }

    private func loggedIn() throws -> SSHSession {
        let session = try connected()
        try session.authenticate(user: "root", identity: .file(path: Self.clientKey,
                                                               passphrase: nil))
        return session
    }

    private func knownHosts(_ lines: [String]) throws -> String {
        let path = makeTestDirectory("bkfleet-kh") + "/known_hosts"
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true,
                                                         encoding: .utf8)
        return path
    }

    /// The host's key without the comment: `ssh-ed25519 AAAA...`.
    private func keyText(_ server: LocalSSHD) -> String {
        server.hostPublicKey.split(separator: " ").prefix(2).joined(separator: " ")
    }

    private func expectError(_ expected: (SSHError) -> Bool, _ body: () throws -> Void,
                             file: StaticString = #filePath, line: UInt = #line) {
        do {
            try body()
            XCTFail("expected an SSHError, got success", file: file, line: line)
        } catch let error as SSHError {
            XCTAssertTrue(expected(error), "unexpected error: \(error)", file: file, line: line)
        } catch {
            XCTFail("expected an SSHError, got \(error)", file: file, line: line)
        }
    }

    // MARK: - Host keys

    func test_unknown_host_key_shows_openssh_fingerprint_and_accepting_it_makes_it_match()
        throws {
        let session = try connected()
        defer { session.close() }
        let file = makeTestDirectory("bkfleet-kh") + "/known_hosts"

        guard case .unknown(let fingerprint, let line) = session.checkHostKey(
            knownHostsFile: file) else { return XCTFail("a missing file must mean unknown") }
        XCTAssertEqual(fingerprint, Self.server.hostKeyFingerprint)
        XCTAssertEqual(session.hostKey.type, "ssh-ed25519")
        XCTAssertEqual(line, "[127.0.0.1]:\(Self.server.port) \(keyText(Self.server))")
        XCTAssertThrowsError(try session.requireKnownHostKey(knownHostsFile: file,
                                                            acceptNew: false))

        XCTAssertTrue(try session.requireKnownHostKey(knownHostsFile: file, acceptNew: true))
        XCTAssertEqual(session.checkHostKey(knownHostsFile: file), .match)
        // OpenSSH itself agrees with what was recorded.
        let lookup = try runTool("/usr/bin/ssh-keygen",
                                 ["-F", "[127.0.0.1]:\(Self.server.port)", "-f", file])
        XCTAssertEqual(lookup.status, 0, lookup.output)
    }

    func test_bracketed_port_entry_matches_but_a_port_22_entry_does_not() throws {
        let session = try connected()
        defer { session.close() }
        let plain = try knownHosts(["127.0.0.1 \(keyText(Self.server))"])
        guard case .unknown = session.checkHostKey(knownHostsFile: plain) else {
            return XCTFail("a plain entry is for port 22 only")
        }
        let bracketed = try knownHosts(["[127.0.0.1]:\(Self.server.port) \(keyText(Self.server))"])
        XCTAssertEqual(session.checkHostKey(knownHostsFile: bracketed), .match)
    }

    func test_hashed_entry_written_by_ssh_keygen_matches() throws {
        let session = try connected()
        defer { session.close() }
        let file = try knownHosts(["[127.0.0.1]:\(Self.server.port) \(keyText(Self.server))"])
        XCTAssertEqual(try runTool("/usr/bin/ssh-keygen", ["-H", "-f", file]).status, 0)
        let text = try String(contentsOfFile: file, encoding: .utf8)
        XCTAssertTrue(text.hasPrefix("|1|") && !text.contains("127.0.0.1"), text)
        XCTAssertEqual(session.checkHostKey(knownHostsFile: file), .match)
    }

    func test_entry_under_the_host_name_matches() throws {
        let named = SSHEndpoint(name: "builder-test", address: "127.0.0.1",
                                port: Self.server.port)
        let session = try connected(named)
        defer { session.close() }
        let file = try knownHosts(["[builder-*]:\(Self.server.port),!other "
                                   + keyText(Self.server)])
        XCTAssertEqual(session.checkHostKey(knownHostsFile: file), .match)
    }

    func test_swapped_host_key_is_changed_naming_the_line_and_refuses_even_with_accept_new()
        throws {
        let session = try connected()
        defer { session.close() }
        // The file knows the other server's key for this address: as if the host's key
        // had been swapped.
        let file = try knownHosts(["# fleet hosts",
                                   "[127.0.0.1]:\(Self.server.port) \(keyText(Self.target))"])
        XCTAssertEqual(session.checkHostKey(knownHostsFile: file),
                       .changed(fingerprint: Self.server.hostKeyFingerprint, knownLine: 2))
        expectError({ if case .hostKeyChanged(_, _, _, 2) = $0 { return true }; return false }) {
            try session.requireKnownHostKey(knownHostsFile: file, acceptNew: true)
        }
        XCTAssertEqual(try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n")
                        .count, 2, "a changed key must never be recorded")
    }

    func test_revoked_key_is_refused_even_when_also_listed() throws {
        let session = try connected()
        defer { session.close() }
        let entry = "[127.0.0.1]:\(Self.server.port) \(keyText(Self.server))"
        let file = try knownHosts([entry, "@revoked \(entry)"])
        XCTAssertEqual(session.checkHostKey(knownHostsFile: file),
                       .changed(fingerprint: Self.server.hostKeyFingerprint, knownLine: 2))
    }

    // MARK: - Authentication

    func test_authorized_ed25519_key_logs_in_and_runs_a_command() throws {
        let session = try loggedIn()
        defer { session.close() }
        let result = try session.run("echo hello; id -un", timeout: 10)
        XCTAssertEqual(result.stdoutText, "hello\nroot\n")
        XCTAssertEqual(result.exitStatus, 0)
    }

    func test_unauthorized_key_fails_naming_user_and_key_file() throws {
        let session = try connected()
        defer { session.close() }
        expectError({
            guard case .authenticationFailed(_, "root", let identity, _) = $0 else { return false }
            return identity.contains(Self.strangerKey)
        }) {
            try session.authenticate(user: "root",
                                     identity: .file(path: Self.strangerKey, passphrase: nil))
        }
    }

    func test_rsa_identity_is_refused_before_trying_with_the_plain_reason() throws {
        let directory = makeTestDirectory("bkfleet-rsa")
        let openSSHFormat = try makeKey(in: directory, name: "rsa", type: "rsa")
        let pemFormat = try makeKey(in: directory, name: "rsa-pem", type: "rsa",
                                    extra: ["-m", "PEM"])
        let session = try connected()
        defer { session.close() }
        for path in [openSSHFormat, pemFormat] {
            expectError({ $0 == .rsaIdentity(source: path)
                          && "\($0)".contains("ssh-keygen -t ed25519") }) {
                try session.authenticate(user: "root", identity: .file(path: path,
                                                                       passphrase: nil))
            }
        }
        XCTAssertFalse(Self.server.log.contains("RSA SHA256"), "no RSA key may be offered")
        // The session is still usable with a good key.
        try session.authenticate(user: "root", identity: .file(path: Self.clientKey,
                                                               passphrase: nil))
    }

    func test_encrypted_key_needs_the_right_passphrase() throws {
        let path = Self.lockedKey
        let first = try connected()
        defer { first.close() }
        expectError({ $0 == .passphraseNeeded(path: path) }) {
            try first.authenticate(user: "root", identity: .file(path: path, passphrase: nil))
        }
        expectError({ $0 == .passphraseWrong(path: path)
                      && !"\($0)".contains("wrong horse") }) {
            try first.authenticate(user: "root", identity: .file(
                path: path, passphrase: Array("wrong horse".utf8)))
        }
        try first.authenticate(user: "root", identity: .file(
            path: path, passphrase: Array(Self.passphrase.utf8)))
        XCTAssertEqual(try first.run("echo ok", timeout: 10).stdoutText, "ok\n")
    }

    func test_missing_identity_file_is_named() throws {
        let session = try connected()
        defer { session.close() }
        let path = Self.keys + "/no-such-key"
        expectError({ if case .identityUnreadable(path, _) = $0 { return true }; return false }) {
            try session.authenticate(user: "root", identity: .file(path: path, passphrase: nil))
        }
    }

    func test_ssh_agent_key_logs_in_and_a_missing_agent_is_reported() throws {
        let agent = try LocalSSHAgent()
        defer { agent.stop() }
        try agent.add(Self.clientKey)
        let saved = ProcessInfo.processInfo.environment["SSH_AUTH_SOCK"]
        defer {
            if let saved { setenv("SSH_AUTH_SOCK", saved, 1) } else { unsetenv("SSH_AUTH_SOCK") }
        }

        setenv("SSH_AUTH_SOCK", agent.socketPath, 1)
        let session = try connected()
        defer { session.close() }
        try session.authenticate(user: "root", identity: .agent)
        XCTAssertEqual(try session.run("echo agent", timeout: 10).stdoutText, "agent\n")

        unsetenv("SSH_AUTH_SOCK")
        let other = try connected()
        defer { other.close() }
        expectError({ if case .agentUnavailable = $0 { return true }; return false }) {
            try other.authenticate(user: "root", identity: .agent)
        }
    }

    // MARK: - Commands

    func test_one_mebibyte_of_stdin_comes_back_exactly_through_cat() throws {
        let session = try loggedIn()
        defer { session.close() }
        var generator = SystemRandomNumberGenerator()
        let input = (0..<(1 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let result = try session.run("cat", stdin: input, timeout: 60)
        XCTAssertEqual(result.stdout.count, input.count)
        XCTAssertTrue(result.stdout == input, "bytes differ")
        XCTAssertEqual(result.exitStatus, 0)
    }

    func test_large_stdout_and_stderr_at_once_do_not_deadlock() throws {
        let session = try loggedIn()
        defer { session.close() }
        let script = "for i in $(seq 1 3); do head -c 1000000 /dev/zero; "
            + "head -c 1000000 /dev/zero >&2; done"
        let result = try session.run(script, timeout: 60)
        XCTAssertEqual(result.stdout.count, 3_000_000)
        XCTAssertEqual(result.stderr.count, 3_000_000)
    }

    func test_stderr_and_exit_status_are_kept_apart() throws {
        let session = try loggedIn()
        defer { session.close() }
        let result = try session.run("printf out; printf err >&2; exit 3", timeout: 10)
        XCTAssertEqual(result.stdoutText, "out")
        XCTAssertEqual(result.stderrText, "err")
        XCTAssertEqual(result.exitStatus, 3)
        XCTAssertNil(result.exitSignal)
    }

    func test_command_killed_by_a_signal_reports_it() throws {
        let session = try loggedIn()
        defer { session.close() }
        let result = try session.run("kill -TERM $$", timeout: 10)
        XCTAssertEqual(result.exitSignal, "TERM")
        XCTAssertEqual(result.exitStatus, -1)
    }

    func test_command_past_its_timeout_fails_naming_it_and_the_session_stays_usable() throws {
        let session = try loggedIn()
        defer { session.close() }
        expectError({ $0 == .commandTimedOut(host: "127.0.0.1:\(Self.server.port)",
                                             command: "sleep 30", seconds: 1) }) {
            _ = try session.run("sleep 30", timeout: 1)
        }
        XCTAssertEqual(try session.run("echo still here", timeout: 10).stdoutText,
                       "still here\n")
    }

    // MARK: - Connection failures

    func test_closed_port_is_refused_naming_address_and_port() {
        let port = freeLoopbackPort()
        let closed = SSHEndpoint(name: "127.0.0.1", address: "127.0.0.1", port: port)
        expectError({ $0 == .connectRefused(host: "127.0.0.1", addressAndPort: "127.0.0.1:\(port)")
                      && "\($0)".contains("127.0.0.1:\(port)") }) {
            _ = try SSHSession.connect(to: closed, timeout: 5)
        }
    }

    func test_server_that_never_sends_a_banner_times_out_in_the_handshake() throws {
        // A listening socket nobody accepts on: TCP connects, SSH never answers.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                XCTAssertEqual(bind(fd, $0, length), 0)
                _ = getsockname(fd, $0, &length)
            }
        }
        XCTAssertEqual(listen(fd, 4), 0)
        let port = Int(UInt16(bigEndian: address.sin_port))
        let silent = SSHEndpoint(name: "silent", address: "127.0.0.1", port: port)
        expectError({ $0 == .timedOut(host: silent.label, step: "SSH handshake", seconds: 1) }) {
            _ = try SSHSession.connect(to: silent, timeout: 1)
        }
    }

    // MARK: - Jump host

    func test_jump_host_reaches_second_server_which_checks_its_own_host_key() throws {
        let jump = try loggedIn()
        defer { jump.close() }
        let inner = SSHEndpoint(name: "inner", address: "127.0.0.1", port: Self.target.port)
        let session = try SSHSession.connect(to: inner, timeout: 10, keepaliveSeconds: 5,
                                             via: jump)
        defer { session.close() }

        XCTAssertEqual(session.hostKey.fingerprint, Self.target.hostKeyFingerprint)
        let file = try knownHosts(["[inner]:\(Self.target.port) \(keyText(Self.target))"])
        XCTAssertEqual(session.checkHostKey(knownHostsFile: file), .match)
        try session.authenticate(user: "root", identity: .file(path: Self.clientKey,
                                                               passphrase: nil))
        let input = [UInt8]((0..<(512 * 1024)).map { UInt8(truncatingIfNeeded: $0 * 7) })
        let result = try session.run("cat", stdin: input, timeout: 60)
        XCTAssertTrue(result.stdout == input, "bytes through the tunnel differ")
        XCTAssertTrue(Self.target.log.contains("Accepted publickey"))

        session.close()
        XCTAssertEqual(try jump.run("echo jump ok", timeout: 10).stdoutText, "jump ok\n")
    }

    func test_several_tunnels_through_one_jump_host_run_at_once() throws {
        let jump = try loggedIn()
        defer { jump.close() }
        let inner = SSHEndpoint(name: "inner", address: "127.0.0.1", port: Self.target.port)
        final class Outcomes: @unchecked Sendable {
            let lock = NSLock()
            var items: [String] = []
        }
        let outcomes = Outcomes()
        let threads = (0..<3).map { index in
            Thread {
                let outcome: String
                do {
                    let session = try SSHSession.connect(to: inner, timeout: 20, via: jump)
                    defer { session.close() }
                    try session.authenticate(user: "root", identity: .file(
                        path: Self.clientKey, passphrase: nil))
                    let input = [UInt8](repeating: UInt8(index), count: 300_000)
                    let result = try session.run("cat", stdin: input, timeout: 60)
                    outcome = result.stdout == input ? "ok" : "bytes differ"
                } catch {
                    outcome = "\(error)"
                }
                outcomes.lock.withLock { outcomes.items.append(outcome) }
            }
        }
        threads.forEach { $0.start() }
        // The jump host's own thread keeps using it meanwhile.
        XCTAssertEqual(try jump.run("sleep 0.5; echo owner", timeout: 30).stdoutText, "owner\n")
        for _ in 0..<600 where outcomes.lock.withLock({ outcomes.items.count }) < 3 {
            usleep(100_000)
        }
        XCTAssertEqual(outcomes.lock.withLock { outcomes.items }, ["ok", "ok", "ok"])
    }

    func test_jump_to_a_closed_port_names_the_jump_host() throws {
        let jump = try loggedIn()
        defer { jump.close() }
        let closed = SSHEndpoint(name: "inner", address: "127.0.0.1", port: freeLoopbackPort())
        expectError({ if case .jumpFailed("inner (127.0.0.1:\(closed.port))", _, _) = $0 {
            return true }; return false }) {
            _ = try SSHSession.connect(to: closed, timeout: 10, via: jump)
        }
    }
}
