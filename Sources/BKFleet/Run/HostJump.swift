// The jump-host leg of a host's connection: connect to the bastion named by the host's
// `jump`, check its own host key in the same known_hosts file and log in with the same
// identity. The inner session then rides a direct-tcpip channel of this one (SSHJump.swift).
// Hosts behind the same bastion share one jump session within a run (JumpPool). It does
// not follow chains of jump hosts: the inventory refuses them.
import Foundation

/// The jump sessions of one run: one per bastion (address, port and user), shared by the
/// hosts in flight behind it, each host's inner session riding its own channel. A jump
/// session is closed when the last inner session using it closes; the next host behind
/// that bastion connects a new one. A shared session that failed a host's tunnel is
/// retired from sharing (it closes with its last user), so one dead connection is not
/// handed to every later host.
public final class JumpPool: @unchecked Sendable {
    private final class Entry {
        /// Held while the jump connects, so hosts arriving meanwhile wait and share it.
        let connecting = NSLock()
        var current: SSHSession?
        /// Inner sessions using each jump session (current or retired).
        var users: [ObjectIdentifier: Int] = [:]
    }

    private let lock = NSLock()
    private var entries: [String: Entry] = [:]
    private var connects = 0

    public init() {}

    /// How many jump sessions were connected so far in this run.
    public var connectCount: Int { lock.withLock { connects } }

    /// The shared session for `key`, or a new one from `connect`; `fresh` says which.
    /// Every successful call must be paired with one `release`.
    func acquire(_ key: String, connect: () throws -> SSHSession) throws
        -> (session: SSHSession, fresh: Bool) {
        let entry = lock.withLock { () -> Entry in
            if let found = entries[key] { return found }
            let made = Entry()
            entries[key] = made
            return made
        }
        entry.connecting.lock()
        defer { entry.connecting.unlock() }
        if let shared = lock.withLock({ () -> SSHSession? in
            guard let current = entry.current, !current.isClosed else { return nil }
            entry.users[ObjectIdentifier(current), default: 0] += 1
            return current
        }) {
            return (shared, false)
        }
        let session = try connect()
        lock.withLock {
            connects += 1
            entry.current = session
            entry.users[ObjectIdentifier(session)] = 1
        }
        return (session, true)
    }

    /// One inner session stopped using `session`; the last one closes it.
    func release(_ key: String, _ session: SSHSession) {
        let last = lock.withLock { () -> Bool in
            guard let entry = entries[key] else { return true }
            let id = ObjectIdentifier(session)
            let left = (entry.users[id] ?? 1) - 1
            if left > 0 {
                entry.users[id] = left
                return false
            }
            entry.users[id] = nil
            if entry.current === session { entry.current = nil }
            return true
        }
        // Closed outside the lock: closing says goodbye to the server, up to a second.
        if last { session.close() }
    }

    /// Stops handing `session` out; it closes when its last user releases it.
    func retire(_ key: String, _ session: SSHSession) {
        lock.withLock {
            if let entry = entries[key], entry.current === session { entry.current = nil }
        }
    }
}

extension HostRun {
    /// The pool's key for this host's bastion, or nil when the host is reached directly.
    var jumpKey: String? {
        host.jump.map { "\($0.user)@\($0.address):\($0.port)" }
    }

    /// The logged-in jump session, or nil when the host is reached directly: shared with
    /// other hosts behind the same bastion (`fresh` false) or connected now. Pair it with
    /// `context.jumps.release`.
    func connectJump() throws -> (session: SSHSession, fresh: Bool)? {
        guard let jump = host.jump, let key = jumpKey else { return nil }
        return try context.jumps.acquire(key) {
            let endpoint = SSHEndpoint(name: jump.name, address: jump.address, port: jump.port)
            let timeout = inventory.defaults.connectTimeout
            context.events.event(host: host.name, step: .connect,
                                 message: "connecting to jump host \(endpoint.label)")
            let session: SSHSession
            do {
                session = try SSHSession.connect(to: endpoint, timeout: timeout,
                                                 keepaliveSeconds: 15)
            } catch {
                throw HostFailure(.connect, "jump host \(jump.name): \(error); check its "
                                  + "address and port ('jump' of \(host.name) in the "
                                  + "inventory) and that sshd runs there (connect_timeout "
                                  + "\(Int(timeout)) s)")
            }
            do {
                try checkHostKey(session)
                try step(.authenticate) {
                    do {
                        try session.authenticate(user: jump.user, identity: context.identity)
                    } catch {
                        throw HostFailure(.authenticate, "jump host \(jump.name): \(error)")
                    }
                }
            } catch {
                session.close()
                throw error
            }
            return session
        }
    }
}
