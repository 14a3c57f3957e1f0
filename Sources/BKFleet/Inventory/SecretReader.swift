// Fetches a secret's value on the machine running bkfleet: from a file, an environment
// variable or a command's standard output, with trailing newlines removed (an SSH key keeps
// one). Errors name the secret and its source (path, variable, command), never the value;
// nothing here keeps, logs or sends the value.
import Foundation

/// Which secret is being read, for messages: `token 'default'`, `SSH key 'deploy'`.
public enum SecretRole: Hashable, Sendable, CustomStringConvertible {
    case token(String)
    case sshKey(String)
    case apiToken
    case identityPassphrase

    public var description: String {
        switch self {
        case .token(let name): return "token '\(name)'"
        case .sshKey(let name): return "SSH key '\(name)'"
        case .apiToken: return "the Buildkite API token"
        case .identityPassphrase: return "the identity passphrase"
        }
    }

    /// Where the source is written, for "fix ... in ..." hints.
    var section: String {
        switch self {
        case .token(let name): return "[tokens.\(name)]"
        case .sshKey(let name): return "[ssh_keys.\(name)]"
        case .apiToken: return "api_token in [buildkite]"
        case .identityPassphrase: return "identity_passphrase in [defaults]"
        }
    }
}

public struct SecretError: Error, Hashable, Sendable, CustomStringConvertible {
    public var role: SecretRole
    /// Full sentence naming the secret, the source and what to do.
    public var message: String

    public var description: String { message }
}

public struct SecretReader: Sendable {
    /// Secrets bigger than this are refused: tokens and keys are a few KiB at most, and
    /// a mistaken `file = "/dev/zero"` must not fill memory.
    public static let maximumSize = 1 << 20

    public var environment: [String: String]
    /// Seconds a `command` source may run before it is stopped.
    public var commandTimeout: Double

    public init(environment: [String: String] = ProcessInfo.processInfo.environment,
                commandTimeout: Double = 60) {
        self.environment = environment
        self.commandTimeout = commandTimeout
    }

    /// The secret's bytes, trailing `\n` and `\r\n` removed; an SSH key then gets exactly
    /// one `\n` back, since OpenSSH refuses a private key file without its final newline.
    /// Throws `SecretError` when the source cannot be read or gives an empty value.
    public func resolve(_ source: SecretSource, role: SecretRole) throws -> [UInt8] {
        let (raw, origin) = try fetch(source, role: role)
        let value = Self.trimmingTrailingNewlines(raw)
        if value.isEmpty {
            throw SecretError(role: role, message: "\(role) from \(origin) is empty; put the "
                + "secret there or change \(role.section)")
        }
        if case .sshKey = role { return value + [0x0A] }
        return value
    }

    /// Removes every trailing `\n` (and the `\r` of each `\r\n`); other bytes stay.
    public static func trimmingTrailingNewlines(_ bytes: [UInt8]) -> [UInt8] {
        var end = bytes.count
        while end > 0, bytes[end - 1] == 0x0A {
            end -= 1
            if end > 0, bytes[end - 1] == 0x0D { end -= 1 }
        }
        return Array(bytes[..<end])
    }

    // MARK: Sources

    private func fetch(_ source: SecretSource,
                       role: SecretRole) throws -> (bytes: [UInt8], origin: String) {
        switch source {
        case .file(let path):
            return (try readFile(path, role: role), "file \(path)")
        case .environment(let name):
            guard let value = environment[name] else {
                throw SecretError(role: role, message: "\(role): environment variable \(name) "
                    + "is not set; export it before running bkfleet or change \(role.section)")
            }
            return (Array(value.utf8), "environment variable \(name)")
        case .command(let command):
            return (try run(command, role: role), "command `\(command)`")
        case .apiStore:
            // The caller reads an API-managed token through TokenStore; getting here
            // means its store was empty.
            throw SecretError(role: role, message: "\(role) is API-managed and its store "
                + "holds no token yet; run 'bkfleet rotate' to create one, or add file =, "
                + "env = or command = with the current token to \(role.section)")
        }
    }

    private func readFile(_ path: String, role: SecretRole) throws -> [UInt8] {
        // Only a regular file: opening a FIFO would wait for a writer forever, and a
        // device such as /dev/zero never ends.
        var before = stat()
        if stat(path, &before) == 0, (before.st_mode & S_IFMT) != S_IFREG {
            let what = (before.st_mode & S_IFMT) == S_IFDIR ? "a directory" : "not a regular file"
            throw SecretError(role: role, message: "\(role): \(path) is \(what); point "
                + "file = in \(role.section) at the file holding the secret")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            let reason = String(cString: strerror(errno))
            throw SecretError(role: role, message: "\(role): cannot read file \(path) "
                + "(\(reason)); create it or fix file = in \(role.section)")
        }
        defer { close(fd) }
        var info = stat()
        if fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR {
            throw SecretError(role: role, message: "\(role): \(path) is a directory; point "
                + "file = in \(role.section) at the file holding the secret")
        }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                let reason = String(cString: strerror(errno))
                throw SecretError(role: role, message: "\(role): cannot read file \(path) "
                    + "(\(reason)); check its permissions")
            }
            if count == 0 { break }
            bytes += chunk[..<count]
            if bytes.count > Self.maximumSize {
                throw SecretError(role: role, message: "\(role): file \(path) is larger than "
                    + "1 MiB, far more than a token or key; check file = in \(role.section)")
            }
        }
        return bytes
    }

    /// Runs a store's command with `input` on its standard input; used to write an
    /// API-managed token's store (TokenStore), so the value never goes in argv.
    func runCommand(_ command: String, input: [UInt8], role: SecretRole) throws -> [UInt8] {
        try run(command, role: role, input: input)
    }

    /// Runs `/bin/sh -c command` with stdin from /dev/null and captures stdout. Its
    /// stderr goes to /dev/null: a failing secret command may print the secret there.
    private func run(_ command: String, role: SecretRole,
                     input: [UInt8]? = nil) throws -> [UInt8] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        process.environment = environment
        let output = Pipe()
        let inputPipe = input.map { _ in Pipe() }
        process.standardInput = inputPipe ?? FileHandle.nullDevice
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw SecretError(role: role, message: "\(role): cannot start /bin/sh for command "
                + "`\(command)` (\(error.localizedDescription))")
        }

        // The shell's own process group, to stop its children with it at the deadline;
        // just the shell if it somehow shares bkfleet's group.
        let pid = process.processIdentifier
        let group = getpgid(pid) == pid ? -pid : pid

        if let inputPipe, let input {
            // A store document is small; write it, then close so the command sees EOF.
            let writer = inputPipe.fileHandleForWriting
            Thread.detachNewThread {
                try? writer.write(contentsOf: Data(input))
                try? writer.close()
            }
        }
        // Read until the command closes its output or the time is up. At the deadline the
        // shell's whole process group (Foundation starts it as a group of its own, so its
        // children are in it) gets SIGTERM, then SIGKILL; what it printed is discarded.
        // LIMITATION: a child that moved itself to another group or session survives.
        var bytes: [UInt8] = []
        let fd = output.fileHandleForReading.fileDescriptor
        let deadline = Date().addingTimeInterval(commandTimeout)
        var tooLarge = false
        var timedOut = false
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { timedOut = true; break }
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&entry, 1, Int32(min(left, 1) * 1000))
            if ready < 0 && errno != EINTR { break }
            if ready <= 0 { continue }
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            if !tooLarge { bytes += chunk[..<count] }
            if bytes.count > Self.maximumSize {
                tooLarge = true
                bytes = []
            }
        }
        if timedOut {
            bytes = []
            kill(group, SIGTERM)
            let grace = Date().addingTimeInterval(2)
            while process.isRunning && Date() < grace { usleep(50_000) }
            kill(group, SIGKILL)
            throw SecretError(role: role, message: "\(role): command `\(command)` did not "
                + "finish within \(Int(commandTimeout)) s and was stopped; make it finish "
                + "without waiting for input")
        }
        process.waitUntilExit()

        if process.terminationReason == .uncaughtSignal {
            throw SecretError(role: role, message: "\(role): command `\(command)` was stopped "
                + "(signal \(process.terminationStatus); it may have run longer than "
                + "\(Int(commandTimeout)) s); make it finish without waiting for input")
        }
        if process.terminationStatus != 0 {
            throw SecretError(role: role, message: "\(role): command `\(command)` exited with "
                + "status \(process.terminationStatus); run it by hand to see why, or "
                + "change \(role.section)")
        }
        if tooLarge {
            throw SecretError(role: role, message: "\(role): command `\(command)` printed more "
                + "than 1 MiB, far more than a token or key; check \(role.section)")
        }
        return bytes
    }
}
