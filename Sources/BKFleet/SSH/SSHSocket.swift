// Plain sockets under the SSH layer: a TCP connect bounded by a deadline (non-blocking
// connect + poll), and the poll helpers the sessions wait in. No SSH protocol here and no
// name caching; every connect resolves afresh.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A point in time after which a step gives up (monotonic clock).
struct Deadline {
    let end: Double
    let seconds: Double

    init(seconds: Double) {
        self.seconds = seconds
        self.end = Deadline.now() + seconds
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    var remaining: Double { end - Deadline.now() }

    var passed: Bool { remaining <= 0 }

    /// Milliseconds to wait in one `poll`, never past the deadline nor over `slice`.
    func pollMillis(slice: Double) -> Int32 {
        let wait = max(0, min(remaining, slice))
        return Int32((wait * 1000).rounded(.up))
    }
}

enum SSHSocket {
    static func setNonBlocking(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
    }

    static func errnoText(_ code: Int32) -> String { String(cString: strerror(code)) }

    /// Connects to the endpoint, trying each resolved address until one answers or the
    /// deadline passes. Returns a non-blocking socket.
    static func connect(_ endpoint: SSHEndpoint, deadline: Deadline) throws -> Int32 {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        hints.ai_flags = AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(endpoint.address, String(endpoint.port), &hints, &list)
        if rc != 0 {
            throw SSHError.addressUnresolvable(host: endpoint.name, address: endpoint.address,
                                               reason: String(cString: gai_strerror(rc)))
        }
        defer { freeaddrinfo(list) }

        // Three outcomes per address: connected (return), refused or unreachable (try the
        // next, remember the error), deadline passed (stop at once).
        var lastError: SSHError?
        var node = list
        while let info = node {
            node = info.pointee.ai_next
            let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype,
                            info.pointee.ai_protocol)
            if fd < 0 { continue }
            setNonBlocking(fd)
            var one: Int32 = 1
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one,
                           socklen_t(MemoryLayout<Int32>.size))
            var err: Int32 = 0
            if Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) != 0 {
                err = errno
                if err == EINPROGRESS {
                    err = waitConnected(fd, deadline: deadline)
                }
            }
            if err == 0 { return fd }
            close(fd)
            switch err {
            case ETIMEDOUT where deadline.passed:
                throw SSHError.timedOut(host: endpoint.name,
                                        step: "connect to \(endpoint.addressAndPort)",
                                        seconds: deadline.seconds)
            case ECONNREFUSED:
                lastError = .connectRefused(host: endpoint.name,
                                            addressAndPort: endpoint.addressAndPort)
            default:
                lastError = .connectUnreachable(host: endpoint.name,
                                                addressAndPort: endpoint.addressAndPort,
                                                reason: errnoText(err))
            }
        }
        throw lastError ?? SSHError.connectUnreachable(
            host: endpoint.name, addressAndPort: endpoint.addressAndPort,
            reason: "no usable address")
    }

    /// Waits for a non-blocking connect to finish; returns its errno (0 on success,
    /// ETIMEDOUT when the deadline passed first).
    private static func waitConnected(_ fd: Int32, deadline: Deadline) -> Int32 {
        while true {
            if deadline.passed { return ETIMEDOUT }
            var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            let n = Glibc.poll(&pfd, 1, deadline.pollMillis(slice: 1))
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { continue }
            var soError: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &len)
            return soError
        }
    }

    /// Polls `fds` once for at most `millis`; EINTR counts as "nothing happened".
    static func poll(_ fds: inout [pollfd], millis: Int32) {
        let n = fds.withUnsafeMutableBufferPointer { buf in
            Glibc.poll(buf.baseAddress, nfds_t(buf.count), millis)
        }
        if n < 0 { for i in fds.indices { fds[i].revents = 0 } }
    }

    /// A connected pair of non-blocking stream sockets (for the jump-host bridge).
    static func pair() throws -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        if socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) != 0 {
            throw SSHError.connectUnreachable(host: "jump bridge", addressAndPort: "socketpair",
                                              reason: errnoText(errno))
        }
        setNonBlocking(fds[0])
        setNonBlocking(fds[1])
        return (fds[0], fds[1])
    }
}
