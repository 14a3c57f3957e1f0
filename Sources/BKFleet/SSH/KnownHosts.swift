// Host-key checking against an OpenSSH known_hosts file, and trust on first use.
// Parsed here rather than with libssh2's knownhost API because that API cannot say which
// line disagrees, also matches a plain `host` line for a non-22 port (OpenSSH does not),
// stops reading at the first line it does not understand, and ignores `@revoked`.
// Certificates (`@cert-authority`) are not supported: such lines are skipped.
import CCrypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The verdict on a host key.
public enum HostKeyCheck: Equatable, Sendable {
    /// An entry for the host holds exactly this key.
    case match
    /// No entry for the host has a key of this type. `lineToAdd` is the OpenSSH line that
    /// would trust it (see `appendKnownHost`).
    case unknown(fingerprint: String, lineToAdd: String)
    /// Entries for the host hold another key of this type, or list this key as `@revoked`.
    /// `knownLine` is the 1-based line of the first such entry; nil when the file exists
    /// but cannot be read.
    case changed(fingerprint: String, knownLine: Int?)
}

extension SSHSession {
    /// Checks `hostKey` against `knownHostsFile`, under the endpoint's address and its
    /// name (`[address]:port` and `[name]:port` when the port is not 22), plain or hashed
    /// (`|1|salt|hash`) entries, with `*`/`?` wildcards and `!` negation as OpenSSH reads
    /// them. A missing file counts as empty. A file that exists but cannot be read gives
    /// `.changed` with `knownLine` nil: nothing can be trusted, so the caller stops.
    /// Call this before `authenticate`: on `.unknown` or `.changed`, close the session and
    /// send nothing.
    public func checkHostKey(knownHostsFile: String) -> HostKeyCheck {
        guard let entries = try? KnownHosts.entries(in: knownHostsFile) else {
            return .changed(fingerprint: hostKey.fingerprint, knownLine: nil)
        }
        return KnownHosts.check(hostKey, for: endpoint, against: entries)
    }

    /// The strict policy in one call: returns normally when the key is known; with
    /// `acceptNew`, records an unknown key (trust on first use) and returns true; throws
    /// `hostKeyUnknown` or `hostKeyChanged` otherwise. A changed key always throws.
    @discardableResult
    public func requireKnownHostKey(knownHostsFile: String, acceptNew: Bool) throws -> Bool {
        if (try? KnownHosts.entries(in: knownHostsFile)) == nil {
            _ = try KnownHosts.entries(in: knownHostsFile)  // throws the precise reason
        }
        switch checkHostKey(knownHostsFile: knownHostsFile) {
        case .match:
            return false
        case .unknown(let fingerprint, let line):
            guard acceptNew else {
                throw SSHError.hostKeyUnknown(host: endpoint.label, fingerprint: fingerprint,
                                              knownHostsFile: knownHostsFile, lineToAdd: line)
            }
            try appendKnownHost(hostKey, for: endpoint, to: knownHostsFile)
            return true
        case .changed(let fingerprint, let line):
            throw SSHError.hostKeyChanged(host: endpoint.label, fingerprint: fingerprint,
                                          knownHostsFile: knownHostsFile, knownLine: line)
        }
    }
}

/// Appends the OpenSSH line trusting `key` for the endpoint's name and address
/// (`[name]:port,[address]:port` when the port is not 22) to `path`, creating the file
/// (mode 0644) if needed. Safe to call from many threads at once. Returns the line.
@discardableResult
public func appendKnownHost(_ key: SSHHostKey, for endpoint: SSHEndpoint,
                            to path: String) throws -> String {
    let line = KnownHosts.line(for: endpoint, key: key)
    try appendKnownHost(line: line, file: path)
    return line
}

/// Appends one known_hosts line, e.g. the `lineToAdd` of `HostKeyCheck.unknown`, to `file`
/// (created with mode 0644 if missing), on a line of its own. Thread-safe.
public func appendKnownHost(line: String, file path: String) throws {
    try KnownHosts.appendLock.withLock {
        let fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        if fd < 0 {
            throw SSHError.knownHostsUnwritable(path: path, reason: SSHSocket.errnoText(errno))
        }
        defer { close(fd) }
        // Start on a fresh line if the file does not end with one.
        var text = line + "\n"
        let size = lseek(fd, 0, SEEK_END)
        var last: UInt8 = 0
        if size > 0 && pread(fd, &last, 1, size - 1) == 1 && last != UInt8(ascii: "\n") {
            text = "\n" + text
        }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if written != bytes.count || fsync(fd) != 0 {
            throw SSHError.knownHostsUnwritable(path: path, reason: SSHSocket.errnoText(errno))
        }
        KnownHosts.forget(path)
    }
}

enum KnownHosts {
    enum Marker { case none, revoked, certAuthority }

    struct Entry {
        var line: Int
        var marker: Marker
        var hosts: [Substring]
        var keyType: String
        var keyBase64: String
    }

    static let appendLock = NSLock()

    /// Parsed files by path, reused while the file's size and modification time hold, so a
    /// fleet of hundreds of hosts parses its known_hosts once.
    private static let cacheLock = NSLock()
    nonisolated(unsafe) private static var cache: [String: (stamp: [Int], entries: [Entry])] = [:]

    static func forget(_ path: String) {
        cacheLock.withLock { _ = cache.removeValue(forKey: path) }
    }

    static func entries(in path: String) throws -> [Entry] {
        var info = stat()
        if stat(path, &info) != 0 {
            if errno == ENOENT { return [] }
            throw SSHError.knownHostsUnreadable(path: path, reason: SSHSocket.errnoText(errno))
        }
        let stamp = [Int(info.st_size), Int(info.st_mtim.tv_sec), Int(info.st_mtim.tv_nsec),
                     Int(info.st_ino)]
        if let hit = cacheLock.withLock({ cache[path] }), hit.stamp == stamp {
            return hit.entries
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SSHError.knownHostsUnreadable(path: path, reason: "cannot be read")
        }
        let entries = parse(String(decoding: data, as: UTF8.self))
        cacheLock.withLock { cache[path] = (stamp, entries) }
        return entries
    }

    /// Reads every line of the form `[@marker] hosts keytype base64 [comment]`; blank
    /// lines, comments and lines too short to hold a key are skipped, as OpenSSH does.
    static func parse(_ text: String) -> [Entry] {
        var entries: [Entry] = []
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
        for (index, raw) in lines.enumerated() {
            var fields = raw.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let first = fields.first, !first.hasPrefix("#") else { continue }
            var marker = Marker.none
            if first.hasPrefix("@") {
                switch first {
                case "@revoked": marker = .revoked
                case "@cert-authority": marker = .certAuthority
                default: continue
                }
                fields.removeFirst()
            }
            guard fields.count >= 3 else { continue }
            entries.append(Entry(line: index + 1, marker: marker,
                                 hosts: fields[0].split(separator: ","),
                                 keyType: String(fields[1]), keyBase64: String(fields[2])))
        }
        return entries
    }

    /// The names a host is looked up under: address and name, bracketed with the port
    /// when it is not 22, lowercased as OpenSSH compares them.
    static func lookupNames(for endpoint: SSHEndpoint) -> [String] {
        var names: [String] = []
        for host in [endpoint.address, endpoint.name] {
            let name = (endpoint.port == 22 ? host : "[\(host)]:\(endpoint.port)").lowercased()
            if !names.contains(name) { names.append(name) }
        }
        return names
    }

    static func line(for endpoint: SSHEndpoint, key: SSHHostKey) -> String {
        let names = [endpoint.name, endpoint.address].reduce(into: [String]()) { list, host in
            let name = endpoint.port == 22 ? host : "[\(host)]:\(endpoint.port)"
            if !list.contains(name) { list.append(name) }
        }
        return names.joined(separator: ",") + " " + key.openSSHText
    }

    /// Three outcomes, decided over every entry naming the host: any entry holding this
    /// key gives `.match` (unless the key is `@revoked`); otherwise an entry with another
    /// key of the same type gives `.changed`; otherwise `.unknown`.
    static func check(_ key: SSHHostKey, for endpoint: SSHEndpoint,
                      against entries: [Entry]) -> HostKeyCheck {
        let names = lookupNames(for: endpoint)
        let keyText = Data(key.blob).base64EncodedString()
        var matched = false
        var firstMismatch: Int?
        for entry in entries where names.contains(where: { hostsMatch(entry.hosts, $0) }) {
            switch entry.marker {
            case .certAuthority:
                continue
            case .revoked:
                if entry.keyBase64 == keyText {
                    return .changed(fingerprint: key.fingerprint, knownLine: entry.line)
                }
            case .none:
                guard entry.keyType == key.type else { continue }
                if entry.keyBase64 == keyText {
                    matched = true
                } else if firstMismatch == nil {
                    firstMismatch = entry.line
                }
            }
        }
        if matched { return .match }
        if let firstMismatch {
            return .changed(fingerprint: key.fingerprint, knownLine: firstMismatch)
        }
        return .unknown(fingerprint: key.fingerprint, lineToAdd: line(for: endpoint, key: key))
    }

    /// OpenSSH's rule for a host field: a negated pattern that matches rules the line out;
    /// otherwise any plain, wildcard or hashed pattern that matches counts.
    static func hostsMatch(_ patterns: [Substring], _ name: String) -> Bool {
        var positive = false
        for pattern in patterns {
            if pattern.hasPrefix("|1|") {
                if hashedMatch(pattern, name) { positive = true }
            } else if pattern.hasPrefix("!") {
                if glob(Array(pattern.dropFirst().lowercased().utf8), Array(name.utf8)) {
                    return false
                }
            } else if glob(Array(pattern.lowercased().utf8), Array(name.utf8)) {
                positive = true
            }
        }
        return positive
    }

    /// `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`, as `ssh-keygen -H` writes.
    private static func hashedMatch(_ pattern: Substring, _ name: String) -> Bool {
        let parts = pattern.split(separator: "|")
        guard parts.count == 3, let salt = Data(base64Encoded: String(parts[1])),
              let hash = Data(base64Encoded: String(parts[2])) else { return false }
        return SSHHash.hmacSHA1(key: [UInt8](salt), message: Array(name.utf8)) == [UInt8](hash)
    }

    /// `*` matches any run of characters, `?` any one character.
    private static func glob(_ pattern: [UInt8], _ text: [UInt8]) -> Bool {
        var p = 0, t = 0
        var star = -1, resume = 0
        while t < text.count {
            if p < pattern.count && (pattern[p] == UInt8(ascii: "?") || pattern[p] == text[t]) {
                p += 1
                t += 1
            } else if p < pattern.count && pattern[p] == UInt8(ascii: "*") {
                star = p
                resume = t
                p += 1
            } else if star >= 0 {
                p = star + 1
                resume += 1
                t = resume
            } else {
                return false
            }
        }
        while p < pattern.count && pattern[p] == UInt8(ascii: "*") { p += 1 }
        return p == pattern.count
    }
}

/// The two hashes host keys need, from libcrypto.
enum SSHHash {
    static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(SHA256_DIGEST_LENGTH))
        bytes.withUnsafeBufferPointer { _ = SHA256($0.baseAddress, $0.count, &out) }
        return out
    }

    static func sha1(_ bytes: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(SHA_DIGEST_LENGTH))
        bytes.withUnsafeBufferPointer { _ = SHA1($0.baseAddress, $0.count, &out) }
        return out
    }

    /// HMAC (RFC 2104) over SHA-1 with its 64-byte block.
    static func hmacSHA1(key: [UInt8], message: [UInt8]) -> [UInt8] {
        var block = key.count > 64 ? sha1(key) : key
        block += [UInt8](repeating: 0, count: 64 - block.count)
        let inner = sha1(block.map { $0 ^ 0x36 } + message)
        return sha1(block.map { $0 ^ 0x5c } + inner)
    }
}
