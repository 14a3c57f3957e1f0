// Reaching a host through a jump host (bastion): a direct-tcpip channel on the jump
// session, bridged to a socketpair so the inner libssh2 session has a socket to talk on.
// The bridge only moves bytes; it never sees plaintext (the inner session encrypts end to
// end) and does no host-key checking of its own.
import CLibSSH2
import Foundation
#if canImport(Glibc)
import Glibc
#endif

extension SSHSession {
    /// Opens a direct-tcpip channel to `target` and returns the inner end of a socketpair
    /// whose other end a pump thread connects to that channel. The thread ends when the
    /// inner session closes its end, when the channel or the jump session dies, or when
    /// the jump session is closed.
    func openTunnel(to target: SSHEndpoint,
                    deadline: Deadline) throws -> (socket: Int32, pump: TunnelEnd) {
        let step = "opening a tunnel through jump host \(endpoint.label)"
        let channel = try channelOpenLock.withLock { try attemptPointer(
            deadline, timeout: .timedOut(host: target.label, step: step,
                                         seconds: deadline.seconds)
        ) { raw in
            // The originator address and port are informational for the server.
            libssh2_channel_direct_tcpip_ex(raw, target.address, Int32(target.port),
                                            "127.0.0.1", 22)
        } }
        guard let channel else {
            let (code, message) = lastError()
            throw SSHError.jumpFailed(host: target.label, via: endpoint.label,
                                      message: "\(message) (libssh2 \(code))")
        }

        let inner: Int32, outer: Int32
        do {
            (inner, outer) = try SSHSocket.pair()
        } catch {
            locked { _ in _ = libssh2_channel_free(channel) }
            throw error
        }
        tunnelStarted()
        let end = TunnelEnd()
        let pump = TunnelPump(jump: self, channel: channel, socket: outer, end: end)
        let thread = Thread { pump.run() }
        thread.name = "bkfleet-tunnel-\(target.name)"
        thread.start()
        return (inner, end)
    }
}

/// Tells the inner session when its tunnel's pump has freed its channel and stopped.
final class TunnelEnd: @unchecked Sendable {
    private let condition = NSCondition()
    private var ended = false

    func markEnded() {
        condition.withLock {
            ended = true
            condition.broadcast()
        }
    }

    func waitUntilEnded(seconds: Double) {
        let limit = Date(timeIntervalSinceNow: seconds)
        condition.withLock {
            while !ended && condition.wait(until: limit) {}
        }
    }
}

/// Moves bytes both ways between a socket and a channel of the jump session, with bounded
/// buffers in each direction so a slow side pushes back instead of filling memory.
private final class TunnelPump {
    private let jump: SSHSession
    private let channel: OpaquePointer
    private let socket: Int32
    private let end: TunnelEnd

    private static let bufferLimit = 256 * 1024

    init(jump: SSHSession, channel: OpaquePointer, socket: Int32, end: TunnelEnd) {
        self.jump = jump
        self.channel = channel
        self.socket = socket
        self.end = end
    }

    func run() {
        defer { finish() }
        var chunk = [UInt8](repeating: 0, count: 32 * 1024)
        var toSocket: [UInt8] = []
        var toChannel: [UInt8] = []
        var channelEOF = false
        var socketEOF = false
        var shutWrite = false

        // Four moves per round, then a short wait when none made progress:
        // 1. channel -> buffer, 2. buffer -> socket, 3. socket -> buffer, 4. buffer -> channel.
        while true {
            var progressed = false

            if !channelEOF && toSocket.count < Self.bufferLimit {
                guard let (n, eof) = jump.locked({ _ -> (Int, Bool) in
                    let n = chunk.withUnsafeMutableBytes { buf in
                        libssh2_channel_read_ex(
                            channel, 0, buf.baseAddress!.assumingMemoryBound(to: CChar.self),
                            buf.count)
                    }
                    return (n, libssh2_channel_eof(channel) == 1)
                }) else { return }
                if n > 0 {
                    toSocket.append(contentsOf: chunk[0..<n])
                    progressed = true
                } else if n == Int(LIBSSH2_ERROR_EAGAIN) || n == 0 {
                    if eof && n == 0 {
                        channelEOF = true
                        progressed = true
                    }
                } else {
                    return
                }
            }

            if !toSocket.isEmpty {
                let n = toSocket.withUnsafeBytes { write(socket, $0.baseAddress, $0.count) }
                if n > 0 {
                    toSocket.removeFirst(n)
                    progressed = true
                } else if n < 0 && errno != EAGAIN && errno != EINTR {
                    return
                }
            }
            if channelEOF && toSocket.isEmpty && !shutWrite {
                shutdown(socket, Int32(SHUT_WR))
                shutWrite = true
            }

            if !socketEOF && toChannel.count < Self.bufferLimit {
                let n = chunk.withUnsafeMutableBytes { read(socket, $0.baseAddress, $0.count) }
                if n > 0 {
                    toChannel.append(contentsOf: chunk[0..<n])
                    progressed = true
                } else if n == 0 || (errno != EAGAIN && errno != EINTR) {
                    socketEOF = true
                    progressed = true
                }
            }

            if !toChannel.isEmpty {
                guard let n = jump.locked({ _ in
                    toChannel.withUnsafeBytes { buf in
                        libssh2_channel_write_ex(
                            channel, 0, buf.baseAddress!.assumingMemoryBound(to: CChar.self),
                            buf.count)
                    }
                }) else { return }
                if n > 0 {
                    toChannel.removeFirst(n)
                    progressed = true
                } else if n != Int(LIBSSH2_ERROR_EAGAIN) {
                    return
                }
            }

            // The inner session closed its end and everything it sent is delivered.
            if socketEOF && toChannel.isEmpty { return }

            jump.keepaliveIfDue()
            if !progressed {
                let events = Int16(POLLIN) | (toSocket.isEmpty ? 0 : Int16(POLLOUT))
                jump.waitForSocket(Deadline(seconds: 0.05),
                                   also: pollfd(fd: socket, events: events, revents: 0))
            }
        }
    }

    /// Closes the channel (best effort, bounded) and the socket, so the inner session sees
    /// end of file if it is still open.
    private func finish() {
        Glibc.close(socket)
        let deadline = Deadline(seconds: 1)
        while !deadline.passed {
            guard let rc = jump.locked({ _ in libssh2_channel_free(channel) }) else { break }
            if rc != LIBSSH2_ERROR_EAGAIN { break }
            jump.waitForSocket(deadline)
        }
        jump.tunnelEnded()
        end.markEnded()
    }
}
