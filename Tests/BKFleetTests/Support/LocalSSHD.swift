// Test equipment: a real OpenSSH sshd on 127.0.0.1 with an ephemeral port, its own
// temporary config, host key and authorized_keys, stopped by its PID. Sessions get a
// fresh HOME (through an authorized_keys `environment=` option) so the account's own
// shell start-up files do not slow every command. Not used by the product.
import Foundation
import XCTest

/// Starts a program with posix_spawn and returns its PID. Foundation's `Process` is not
/// used: on Linux its child monitor blocks in wait4 on a long-lived child (sshd), after
/// which no other `Process` is ever seen to exit.
func spawnTool(_ path: String, _ arguments: [String], environment: [String: String]? = nil,
               outputFD: Int32? = nil) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if let outputFD {
        posix_spawn_file_actions_adddup2(&actions, outputFD, 1)
        posix_spawn_file_actions_adddup2(&actions, outputFD, 2)
    } else {
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    }
    let env = (environment ?? ProcessInfo.processInfo.environment).map { "\($0)=\($1)" }
    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    let envp = env.map { strdup($0) } + [nil]
    defer { (argv + envp).forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, path, &actions, nil, argv, envp)
    guard rc == 0 else {
        throw NSError(domain: path, code: Int(rc),
                      userInfo: [NSLocalizedDescriptionKey: String(cString: strerror(rc))])
    }
    return pid
}

/// Waits for a child started by `spawnTool`; returns its exit status.
@discardableResult
func waitTool(_ pid: pid_t) -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
}

/// Runs a program to completion and returns its exit status and combined output.
@discardableResult
func runTool(_ path: String, _ arguments: [String], environment: [String: String]? = nil)
    throws -> (status: Int32, output: String) {
    var fds: [Int32] = [-1, -1]
    guard pipe(&fds) == 0 else { throw NSError(domain: "pipe", code: Int(errno)) }
    _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
    let pid: pid_t
    do {
        pid = try spawnTool(path, arguments, environment: environment, outputFD: fds[1])
    } catch {
        close(fds[0])
        close(fds[1])
        throw error
    }
    close(fds[1])
    var output: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
        if n > 0 { output += chunk[0..<n]; continue }
        if n < 0 && errno == EINTR { continue }
        break
    }
    close(fds[0])
    return (waitTool(pid), String(decoding: output, as: UTF8.self))
}

/// A fresh private directory under the system's temporary directory.
func makeTestDirectory(_ prefix: String) -> String {
    var template = Array((NSTemporaryDirectory() + "/\(prefix)-XXXXXX").utf8CString)
    let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    precondition(made != nil, "mkdtemp failed")
    return String(cString: template)
}

/// Generates a key pair with ssh-keygen; returns the private key's path.
func makeKey(in directory: String, name: String, type: String = "ed25519",
             passphrase: String = "", extra: [String] = []) throws -> String {
    let path = directory + "/" + name
    var arguments = ["-q", "-t", type, "-N", passphrase, "-C", name, "-f", path]
    if type == "rsa" { arguments += ["-b", "2048"] }
    let result = try runTool("/usr/bin/ssh-keygen", arguments + extra)
    guard result.status == 0 else {
        throw NSError(domain: "ssh-keygen", code: Int(result.status),
                      userInfo: [NSLocalizedDescriptionKey: result.output])
    }
    return path
}

/// A port on 127.0.0.1 that was free a moment ago (the kernel picked it).
func freeLoopbackPort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            _ = bind(fd, $0, length)
            _ = getsockname(fd, $0, &length)
        }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

final class LocalSSHD {
    let directory: String
    let port: Int
    let hostKeyPath: String
    let logPath: String
    private var pid: pid_t = 0

    /// The host key line (`ssh-ed25519 AAAA... comment`) from the `.pub` file.
    var hostPublicKey: String {
        (try? String(contentsOfFile: hostKeyPath + ".pub", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
    }

    /// `SHA256:...` of the host key, as ssh-keygen prints it.
    var hostKeyFingerprint: String {
        let output = (try? runTool("/usr/bin/ssh-keygen", ["-l", "-f", hostKeyPath + ".pub"]))?
            .output ?? ""
        return output.split(separator: " ").dropFirst().first.map(String.init) ?? ""
    }

    /// Starts sshd authorizing `authorizedKeys` (public key lines) for every user.
    init(authorizedKeys: [String], hostKeyType: String = "ed25519") throws {
        directory = makeTestDirectory("bkfleet-sshd")
        hostKeyPath = try makeKey(in: directory, name: "host_key", type: hostKeyType)
        logPath = directory + "/sshd.log"
        let home = directory + "/home"
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        let authorized = authorizedKeys.map { "environment=\"HOME=\(home)\" \($0)" }
        try (authorized.joined(separator: "\n") + "\n")
            .write(toFile: directory + "/authorized_keys", atomically: true, encoding: .utf8)

        // sshd's privilege separation needs this directory; it is absent on a machine that
        // never ran the system sshd.
        try? FileManager.default.createDirectory(atPath: "/run/sshd",
                                                 withIntermediateDirectories: true)
        port = freeLoopbackPort()
        let config = """
            Port \(port)
            ListenAddress 127.0.0.1
            HostKey \(hostKeyPath)
            PidFile none
            AuthorizedKeysFile \(directory)/authorized_keys
            UsePAM no
            StrictModes no
            PermitRootLogin prohibit-password
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            PubkeyAuthentication yes
            PermitUserEnvironment HOME
            AllowTcpForwarding yes
            MaxStartups 100:30:200
            LogLevel VERBOSE

            """
        try config.write(toFile: directory + "/sshd_config", atomically: true, encoding: .utf8)

        pid = try spawnTool("/usr/sbin/sshd",
                            ["-D", "-f", directory + "/sshd_config", "-E", logPath])
        try waitUntilListening()
    }

    deinit { stop() }

    /// Stops this sshd (and only it) by its PID.
    func stop() {
        guard pid > 0 else { return }
        kill(pid, SIGTERM)
        waitTool(pid)
        pid = 0
        try? FileManager.default.removeItem(atPath: directory)
    }

    private var isRunning: Bool { pid > 0 && waitpid(pid, nil, WNOHANG) == 0 }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    private func waitUntilListening() throws {
        for _ in 0..<100 {
            if !isRunning { break }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = UInt16(port).bigEndian
            let rc = withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            close(fd)
            if rc == 0 { return }
            usleep(50_000)
        }
        throw NSError(domain: "LocalSSHD", code: 1,
                      userInfo: [NSLocalizedDescriptionKey: "sshd did not start: \(log)"])
    }
}

/// An ssh-agent in the foreground on a private socket, stopped by its PID.
final class LocalSSHAgent {
    let socketPath: String
    private let directory: String
    private var pid: pid_t = 0

    init() throws {
        directory = makeTestDirectory("bkfleet-agent")
        socketPath = directory + "/agent.sock"
        pid = try spawnTool("/usr/bin/ssh-agent", ["-D", "-a", socketPath])
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: socketPath) {
            usleep(20_000)
        }
    }

    deinit { stop() }

    func add(_ keyPath: String) throws {
        let result = try runTool("/usr/bin/ssh-add", [keyPath],
                                 environment: ["SSH_AUTH_SOCK": socketPath])
        XCTAssertEqual(result.status, 0, result.output)
    }

    func stop() {
        guard pid > 0 else { return }
        kill(pid, SIGTERM)
        waitTool(pid)
        pid = 0
        try? FileManager.default.removeItem(atPath: directory)
    }
}
