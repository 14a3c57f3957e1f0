// One SSH connection to one host: TCP (or a jump host's tunnel), handshake and host key,
// kept open for the whole run. The API blocks its caller: bkfleet gives each host in
// flight its own OS thread, never a task on Swift's cooperative pool. Authentication
// (SSHAuth.swift), commands (SSHCommand.swift) and jump tunnels (SSHJump.swift) extend it.
import CLibSSH2
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// libssh2's global set-up, run once per process before the first session. Swift runs a
/// static initialiser exactly once even when many threads reach it together, which is
/// what libssh2_init (not itself thread-safe) needs.
enum LibSSH2Runtime {
    private static let status: Int32 = libssh2_init(0)

    static func ensure() { _ = status }
}

/// A connected SSH session.
///
/// Threading: call a session from one thread at a time. Internally every libssh2 call is
/// made under the session's lock and the session runs in libssh2's non-blocking mode,
/// waiting in `poll` between calls; that is what lets the tunnels of hosts reached
/// through this one (see `connect(to:timeout:keepaliveSeconds:via:)`) share it safely
/// with its owner thread, and what bounds every step by a deadline.
public final class SSHSession {
    public let endpoint: SSHEndpoint

    /// The key the server proved it holds. Check it with `checkHostKey` before
    /// authenticating or sending anything.
    public private(set) var hostKey = SSHHostKey(type: "", blob: [])

    /// Bounds authentication; set from `connect`'s timeout.
    let stepTimeout: Double

    private let lock = NSLock()
    /// libssh2 keeps one channel-open state machine per session: two opens in flight at
    /// once (a command and a tunnel, or two tunnels) would corrupt it.
    let channelOpenLock = NSLock()
    private var raw: OpaquePointer?
    private var socket: Int32
    /// The jump session this one tunnels through, kept alive as long as this one.
    private let jump: SSHSession?
    /// The pump of this session's tunnel through `jump`.
    private var tunnel: TunnelEnd?
    /// Tunnels of other sessions currently riding on this one (guarded by `lock`).
    private var tunnels = 0
    /// Run once by `close`, after this session's tunnel ended (guarded by `lock`).
    private var whenClosed: (() -> Void)?

    private init(endpoint: SSHEndpoint, raw: OpaquePointer, socket: Int32,
                 jump: SSHSession?, stepTimeout: Double) {
        self.endpoint = endpoint
        self.raw = raw
        self.socket = socket
        self.jump = jump
        self.stepTimeout = stepTimeout
    }

    deinit { close() }

    /// Opens TCP to the endpoint (or a tunnel through `jump`) and completes the SSH
    /// handshake, all within `timeout` seconds. Nothing is authenticated yet: check
    /// `hostKey` first. `keepaliveSeconds` > 0 sends SSH keepalives that often while
    /// waiting for a command.
    ///
    /// With `jump`, the jump session (already authenticated) opens a direct-tcpip channel
    /// to `endpoint.address:port`; libssh2 needs a socket for the inner session, so a
    /// socketpair bridges the two and a small thread pumps bytes between the pair and the
    /// channel until either side closes. The inner session does its own handshake and
    /// host-key check end to end; the jump host sees only encrypted bytes.
    public static func connect(to endpoint: SSHEndpoint, timeout: Double,
                               keepaliveSeconds: Int = 0,
                               via jump: SSHSession? = nil) throws -> SSHSession {
        LibSSH2Runtime.ensure()
        let deadline = Deadline(seconds: timeout)

        let fd: Int32
        var tunnel: TunnelEnd?
        if let jump {
            (fd, tunnel) = try jump.openTunnel(to: endpoint, deadline: deadline)
        } else {
            fd = try SSHSocket.connect(endpoint, deadline: deadline)
        }

        guard let raw = libssh2_session_init_ex(nil, nil, nil, nil) else {
            Glibc.close(fd)
            throw SSHError.handshakeFailed(host: endpoint.label, code: LIBSSH2_ERROR_ALLOC,
                                           message: "libssh2 could not allocate a session")
        }
        libssh2_session_set_blocking(raw, 0)
        // ed25519 first, as OpenSSH's client prefers it: the key a user recorded with
        // `ssh` or `ssh-keyscan` is then the one we are offered.
        _ = libssh2_session_method_pref(
            raw, LIBSSH2_METHOD_HOSTKEY,
            "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,ssh-rsa")
        let session = SSHSession(endpoint: endpoint, raw: raw, socket: fd, jump: jump,
                                 stepTimeout: timeout)
        session.tunnel = tunnel

        do {
            let rc = try session.attempt(
                deadline, timeout: .timedOut(host: endpoint.label, step: "SSH handshake",
                                             seconds: timeout)
            ) { libssh2_session_handshake($0, fd) }
            if rc != 0 {
                let (code, message) = session.lastError()
                throw SSHError.handshakeFailed(host: endpoint.label, code: code,
                                               message: message)
            }
            session.hostKey = try session.readHostKey()
            if keepaliveSeconds > 0 {
                session.locked { libssh2_keepalive_config($0, 1, UInt32(keepaliveSeconds)) }
            }
        } catch {
            session.close()
            throw error
        }
        return session
    }

    /// Says goodbye to the server (best effort, at most about a second) and frees
    /// everything. Safe to call twice. Tunnels riding on this session die with it.
    public func close() {
        closeOwn()
        // The tunnel's pump sees end of file on the socket just closed and frees its
        // channel; waiting for that (bounded) leaves no thread inside libssh2, or the
        // crypto library beneath it, when the process exits after closing.
        tunnel?.waitUntilEnded(seconds: 2)
        let hook = lock.withLock { () -> (() -> Void)? in
            defer { whenClosed = nil }
            return whenClosed
        }
        hook?()
    }

    /// Runs `body` once when this session is closed, after its tunnel (if any) ended:
    /// how a shared jump session learns that one of its users is gone (JumpPool).
    public func onClose(_ body: @escaping () -> Void) {
        lock.withLock { whenClosed = body }
    }

    private func closeOwn() {
        lock.lock()
        defer { lock.unlock() }
        if let raw {
            // Blocking with a short timeout so libssh2 can finish freeing its channels.
            libssh2_session_set_blocking(raw, 1)
            libssh2_session_set_timeout(raw, 1000)
            _ = libssh2_session_disconnect_ex(raw, SSH_DISCONNECT_BY_APPLICATION,
                                              "bkfleet done", "")
            _ = libssh2_session_free(raw)
            self.raw = nil
        }
        if socket >= 0 {
            Glibc.close(socket)
            socket = -1
        }
    }

    /// Whether `close` has run (or the session was never usable).
    public var isClosed: Bool { lock.withLock { raw == nil } }

    // MARK: - Internals shared by the extensions

    /// Runs `body` with the libssh2 session under the lock; nil once closed.
    @discardableResult
    func locked<T>(_ body: (OpaquePointer) -> T) -> T? {
        lock.lock()
        defer { lock.unlock() }
        guard let raw else { return nil }
        return body(raw)
    }

    /// Repeats a non-blocking libssh2 call while it answers EAGAIN, waiting for the socket
    /// in between, until `deadline`. Returns the call's final result.
    func attempt(_ deadline: Deadline, timeout: @autoclosure () -> SSHError,
                 _ body: (OpaquePointer) -> Int32) throws -> Int32 {
        while true {
            guard let rc = locked(body) else { throw SSHError.notConnected(host: endpoint.label) }
            if rc != LIBSSH2_ERROR_EAGAIN { return rc }
            if deadline.passed { throw timeout() }
            waitForSocket(deadline)
        }
    }

    /// Like `attempt` for calls that return a pointer and signal EAGAIN through
    /// `libssh2_session_last_errno`. Returns nil when the call failed for good.
    func attemptPointer<T>(_ deadline: Deadline, timeout: @autoclosure () -> SSHError,
                           _ body: (OpaquePointer) -> T?) throws -> T? {
        while true {
            guard let (value, code) = locked({ raw -> (T?, Int32) in
                let value = body(raw)
                return (value, value == nil ? libssh2_session_last_errno(raw) : 0)
            }) else { throw SSHError.notConnected(host: endpoint.label) }
            if let value { return value }
            if code != LIBSSH2_ERROR_EAGAIN { return nil }
            if deadline.passed { throw timeout() }
            waitForSocket(deadline)
        }
    }

    /// Sleeps until the socket is ready in the direction libssh2 is blocked on, the
    /// deadline passes, or a time slice ends. While tunnels share this session another
    /// thread may consume the data we waited for, so the slice is then short.
    func waitForSocket(_ deadline: Deadline, also extra: pollfd? = nil) {
        guard let (directions, shared) = locked({ raw in
            (libssh2_session_block_directions(raw), tunnels > 0)
        }) else { return }
        var events: Int16 = 0
        if directions & LIBSSH2_SESSION_BLOCK_INBOUND != 0 { events |= Int16(POLLIN) }
        if directions & LIBSSH2_SESSION_BLOCK_OUTBOUND != 0 { events |= Int16(POLLOUT) }
        if events == 0 { events = Int16(POLLIN) }
        var fds = [pollfd(fd: socket, events: events, revents: 0)]
        if let extra { fds.append(extra) }
        SSHSocket.poll(&fds, millis: deadline.pollMillis(slice: shared ? 0.01 : 1.0))
    }

    /// Sends a keepalive if one is due (no-op when keepalives are off).
    func keepaliveIfDue() {
        locked { raw in
            var next: Int32 = 0
            _ = libssh2_keepalive_send(raw, &next)
        }
    }

    /// libssh2's last error code and message for this session.
    func lastError() -> (Int32, String) {
        locked { raw -> (Int32, String) in
            var message: UnsafeMutablePointer<CChar>?
            var length: Int32 = 0
            let code = libssh2_session_last_error(raw, &message, &length, 0)
            return (code, message.map { String(cString: $0) } ?? "unknown error")
        } ?? (LIBSSH2_ERROR_SOCKET_DISCONNECT, "session closed")
    }

    /// Bytes read from a channel per libssh2 call (see SSHCommand.swift's `exchange`).
    static let readChunkSize = 4 * 1024

    /// Reads what both streams of `channel` have ready without waiting: stdout (stream 0)
    /// into `stdout`, stderr (stream 1) into `stderr`. Returns whether anything arrived,
    /// and the libssh2 error that stopped the reading (0 when the streams only ran dry).
    /// Call under the session's lock.
    static func drainReady(_ channel: OpaquePointer, chunk: inout [UInt8],
                           stdout: inout [UInt8], stderr: inout [UInt8])
        -> (progressed: Bool, error: Int) {
        var progressed = false
        for stream: Int32 in [0, 1] {
            while true {
                let n = chunk.withUnsafeMutableBytes { buf in
                    libssh2_channel_read_ex(
                        channel, stream,
                        buf.baseAddress!.assumingMemoryBound(to: CChar.self), buf.count)
                }
                if n > 0 {
                    if stream == 0 {
                        stdout.append(contentsOf: chunk[0..<n])
                    } else {
                        stderr.append(contentsOf: chunk[0..<n])
                    }
                    progressed = true
                    continue
                }
                if n == 0 || n == Int(LIBSSH2_ERROR_EAGAIN) { break }
                return (progressed, n)
            }
        }
        return (progressed, 0)
    }

    /// True for libssh2 codes that mean the transport itself is gone.
    static func isTransportLoss(_ code: Int32) -> Bool {
        [LIBSSH2_ERROR_SOCKET_DISCONNECT, LIBSSH2_ERROR_SOCKET_RECV, LIBSSH2_ERROR_SOCKET_SEND,
         LIBSSH2_ERROR_SOCKET_NONE, LIBSSH2_ERROR_BAD_SOCKET, LIBSSH2_ERROR_SOCKET_TIMEOUT]
            .contains(code)
    }

    /// Counts a tunnel riding on this session (see SSHJump.swift).
    func tunnelStarted() { lock.withLock { tunnels += 1 } }

    func tunnelEnded() { lock.withLock { tunnels -= 1 } }

    /// The socket libssh2 talks on, for tunnels polling this session.
    var socketDescriptor: Int32 { lock.withLock { socket } }

    private func readHostKey() throws -> SSHHostKey {
        let blob = locked { raw -> [UInt8] in
            var length = 0
            var type: Int32 = 0
            guard let pointer = libssh2_session_hostkey(raw, &length, &type) else { return [] }
            return pointer.withMemoryRebound(to: UInt8.self, capacity: length) {
                Array(UnsafeBufferPointer(start: $0, count: length))
            }
        } ?? []
        var reader = SSHWireReader(blob)
        guard let typeBytes = reader.string() else {
            throw SSHError.handshakeFailed(host: endpoint.label, code: LIBSSH2_ERROR_HOSTKEY_INIT,
                                           message: "the server sent no usable host key")
        }
        return SSHHostKey(type: String(decoding: typeBytes, as: UTF8.self), blob: blob)
    }
}

/// Reads SSH wire-format fields (RFC 4251 `uint32` and `string`).
struct SSHWireReader {
    private let bytes: [UInt8]
    private var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func uint32() -> UInt32? {
        guard offset + 4 <= bytes.count else { return nil }
        let value = bytes[offset..<offset + 4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        offset += 4
        return value
    }

    mutating func string() -> [UInt8]? {
        guard let length = uint32().map(Int.init), offset + length <= bytes.count else {
            return nil
        }
        defer { offset += length }
        return Array(bytes[offset..<offset + length])
    }
}
