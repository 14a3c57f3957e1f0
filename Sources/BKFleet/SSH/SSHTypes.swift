// The small value types of the SSH layer: where to connect, which identity to use, what a
// host key looks like and what a remote command returned. No I/O happens here; the
// session, host-key and authentication files do the work.
import Foundation

/// One SSH server to reach.
public struct SSHEndpoint: Equatable, Sendable {
    /// The host's name in the inventory: used in messages and looked up in known_hosts.
    public var name: String
    /// What to connect to: an IP address or a resolvable name.
    public var address: String
    public var port: Int

    public init(name: String, address: String, port: Int = 22) {
        self.name = name
        self.address = address
        self.port = port
    }

    /// `address:port`, as a connect error names it.
    public var addressAndPort: String {
        address.contains(":") ? "[\(address)]:\(port)" : "\(address):\(port)"
    }

    /// `builder-01 (10.250.0.11:22)`, or just `10.250.0.11:22` when the name is the address.
    public var label: String {
        name == address ? addressAndPort : "\(name) (\(addressAndPort))"
    }
}

/// How to prove who we are to the server.
public enum SSHIdentity: Sendable {
    /// A private key file (OpenSSH or PEM format). The passphrase, when given, is only
    /// handed to libssh2 and never appears in a message.
    case file(path: String, passphrase: [UInt8]?)
    /// Every key the ssh-agent at `SSH_AUTH_SOCK` offers, in its order.
    case agent

    /// What messages call this identity; never includes the passphrase.
    public var label: String {
        switch self {
        case .file(let path, _): return "identity file \(path)"
        case .agent: return "ssh-agent"
        }
    }
}

/// The key the server proved it holds during the handshake.
public struct SSHHostKey: Equatable, Sendable {
    /// The algorithm name inside the blob, e.g. `ssh-ed25519`.
    public var type: String
    /// The public key blob in SSH wire format, as known_hosts stores it in base64.
    public var blob: [UInt8]

    public init(type: String, blob: [UInt8]) {
        self.type = type
        self.blob = blob
    }

    /// `SHA256:` and the unpadded base64 of the blob's SHA-256, as `ssh-keygen -l` prints.
    public var fingerprint: String {
        var text = Data(SSHHash.sha256(blob)).base64EncodedString()
        while text.hasSuffix("=") { text.removeLast() }
        return "SHA256:" + text
    }

    /// `ssh-ed25519 AAAA...`, the key part of a known_hosts line.
    public var openSSHText: String {
        type + " " + Data(blob).base64EncodedString()
    }
}

/// What a remote command did.
public struct RemoteResult: Equatable, Sendable {
    /// The command's exit status; -1 when it was killed by a signal or reported none.
    public var exitStatus: Int32
    /// The signal's name without `SIG` (e.g. `TERM`) when the command died of one.
    public var exitSignal: String?
    public var stdout: [UInt8]
    public var stderr: [UInt8]

    public init(exitStatus: Int32, exitSignal: String?, stdout: [UInt8], stderr: [UInt8]) {
        self.exitStatus = exitStatus
        self.exitSignal = exitSignal
        self.stdout = stdout
        self.stderr = stderr
    }

    /// Standard output decoded as UTF-8 (invalid bytes replaced).
    public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }

    public var stderrText: String { String(decoding: stderr, as: UTF8.self) }
}
