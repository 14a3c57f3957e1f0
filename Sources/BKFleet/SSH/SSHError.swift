// Everything that can go wrong while reaching a host over SSH, one case per step, each
// naming the host and what to do next. Descriptions never contain a passphrase, a key or
// any stdin bytes; the remote command text may appear (it is never secret, see `run`).
import Foundation

public enum SSHError: Error, Equatable, CustomStringConvertible {
    case addressUnresolvable(host: String, address: String, reason: String)
    case connectRefused(host: String, addressAndPort: String)
    case connectUnreachable(host: String, addressAndPort: String, reason: String)
    /// A step (connect, handshake, authentication, jump channel) took longer than allowed.
    case timedOut(host: String, step: String, seconds: Double)
    case handshakeFailed(host: String, code: Int32, message: String)
    case knownHostsUnreadable(path: String, reason: String)
    case knownHostsUnwritable(path: String, reason: String)
    case hostKeyUnknown(host: String, fingerprint: String, knownHostsFile: String,
                        lineToAdd: String)
    case hostKeyChanged(host: String, fingerprint: String, knownHostsFile: String,
                        knownLine: Int?)
    case identityUnreadable(path: String, reason: String)
    /// `source` is the identity file's path, or `ssh-agent`.
    case rsaIdentity(source: String)
    case passphraseNeeded(path: String)
    case passphraseWrong(path: String)
    case agentUnavailable(reason: String)
    case authenticationFailed(host: String, user: String, identity: String, message: String)
    case commandTimedOut(host: String, command: String, seconds: Double)
    case channelFailed(host: String, step: String, code: Int32, message: String)
    case jumpFailed(host: String, via: String, message: String)
    case connectionLost(host: String, step: String, message: String)
    case notConnected(host: String)

    public var description: String {
        switch self {
        case .addressUnresolvable(let host, let address, let reason):
            return "\(host): cannot resolve address '\(address)': \(reason); "
                + "check the host's address in the inventory"
        case .connectRefused(let host, let target):
            return "\(host): connection to \(target) refused; is sshd running and is the "
                + "port right?"
        case .connectUnreachable(let host, let target, let reason):
            return "\(host): cannot reach \(target): \(reason)"
        case .timedOut(let host, let step, let seconds):
            return "\(host): \(step) timed out after \(Self.seconds(seconds)); check that the "
                + "host is up and reachable, or raise the timeout"
        case .handshakeFailed(let host, let code, let message):
            var text = "\(host): SSH handshake failed (libssh2 \(code): \(message))"
            if code == -5 || code == -8 {
                text += "; libssh2 1.10 cannot use an RSA-only host key (rsa-sha2): give "
                    + "the host an ed25519 host key"
            }
            return text
        case .knownHostsUnreadable(let path, let reason):
            return "cannot read known_hosts file \(path): \(reason)"
        case .knownHostsUnwritable(let path, let reason):
            return "cannot add to known_hosts file \(path): \(reason)"
        case .hostKeyUnknown(let host, let fingerprint, let file, let line):
            return "\(host): host key \(fingerprint) is not in \(file); verify it on the "
                + "host (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then rerun with "
                + "--accept-new-host-keys or add this line: \(line)"
        case .hostKeyChanged(let host, let fingerprint, let file, let line):
            let at = line.map { "\(file):\($0)" } ?? file
            return "\(host): HOST KEY CHANGED: the host offered \(fingerprint), which "
                + "disagrees with \(at); nothing was sent. If the host was reinstalled, "
                + "remove the old entry (ssh-keygen -R NAME -f \(file)) and accept the new "
                + "key; otherwise suspect an impostor"
        case .identityUnreadable(let path, let reason):
            return "identity file \(path): \(reason)"
        case .rsaIdentity(let source):
            return "\(source): RSA keys cannot work here: libssh2 1.10 can only sign with "
                + "ssh-rsa (SHA-1), which OpenSSH 8.8 and later refuse. Generate an ed25519 "
                + "key with `ssh-keygen -t ed25519`, authorize it on the hosts and use it"
        case .passphraseNeeded(let path):
            return "identity file \(path) is encrypted and no passphrase was given"
        case .passphraseWrong(let path):
            return "identity file \(path): wrong passphrase (or a key format libssh2 cannot "
                + "read)"
        case .agentUnavailable(let reason):
            return "ssh-agent unavailable: \(reason); start one and `ssh-add` your key, or "
                + "use an identity file"
        case .authenticationFailed(let host, let user, let identity, let message):
            return "\(host): authentication as '\(user)' with \(identity) failed: \(message); "
                + "check that the public key is in ~\(user)/.ssh/authorized_keys on the host"
        case .commandTimedOut(let host, let command, let seconds):
            return "\(host): command '\(command)' did not finish within "
                + "\(Self.seconds(seconds)); it may still be running on the host"
        case .channelFailed(let host, let step, let code, let message):
            return "\(host): \(step) failed (libssh2 \(code): \(message))"
        case .jumpFailed(let host, let via, let message):
            return "\(host): jump host \(via) could not open a connection to it: \(message)"
        case .connectionLost(let host, let step, let message):
            return "\(host): connection lost during \(step): \(message)"
        case .notConnected(let host):
            return "\(host): the SSH session is already closed"
        }
    }

    private static func seconds(_ value: Double) -> String {
        value == value.rounded() ? "\(Int(value)) s" : String(format: "%.1f s", value)
    }
}
