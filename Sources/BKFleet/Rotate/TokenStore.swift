// Where an API-managed token's value and API id live between runs: a small JSON document
// in a local file (created 0600, replaced atomically) or behind a pair of commands (a
// password manager). During a rotation it also keeps the previous token until it is
// revoked, so an interrupted rotation can be finished. It never prints a value.
import Foundation

/// One token as the store keeps it.
public struct StoredToken: Sendable, Equatable {
    public var bytes: [UInt8]
    /// The token's API id; nil for a token whose id nobody told bkfleet.
    public var id: String?

    public init(bytes: [UInt8], id: String?) {
        self.bytes = bytes
        self.id = id
    }

    public var fingerprint: String { Digest.fingerprint(bytes) }
}

/// The store's document: the token agents should use, and while a rotation is
/// unfinished the one it replaces.
public struct TokenStoreDocument: Sendable, Equatable {
    public var current: StoredToken?
    public var previous: StoredToken?

    public init(current: StoredToken? = nil, previous: StoredToken? = nil) {
        self.current = current
        self.previous = previous
    }

    /// `{"format": "bkfleet-token-store-1", "current": {"value", "id"}, "previous": …}`.
    public func encoded() -> [UInt8] {
        func entry(_ token: StoredToken?) -> Any {
            guard let token else { return NSNull() }
            return ["value": String(decoding: token.bytes, as: UTF8.self),
                    "id": token.id.map { $0 as Any } ?? NSNull()] as [String: Any]
        }
        let object: [String: Any] = ["format": "bkfleet-token-store-1",
                                     "current": entry(current), "previous": entry(previous)]
        let data = (try? JSONSerialization.data(withJSONObject: object,
                                                options: [.sortedKeys])) ?? Data()
        return Array(data) + [0x0A]
    }

    /// Empty input is an empty store (a new file, or a password-manager entry not made yet).
    public static func decode(_ bytes: [UInt8]) -> TokenStoreDocument? {
        if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) {
            return TokenStoreDocument()
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes))
                as? [String: Any],
              object["format"] as? String == "bkfleet-token-store-1" else { return nil }
        func entry(_ key: String) -> StoredToken? {
            guard let item = object[key] as? [String: Any],
                  let value = item["value"] as? String, !value.isEmpty else { return nil }
            return StoredToken(bytes: Array(value.utf8), id: item["id"] as? String)
        }
        return TokenStoreDocument(current: entry("current"), previous: entry("previous"))
    }
}

public struct TokenStore: Sendable {
    public var location: TokenStoreLocation
    /// The `[tokens.NAME]` name, for messages.
    public var token: String

    public init(location: TokenStoreLocation, token: String) {
        self.location = location
        self.token = token
    }

    public var description: String {
        switch location {
        case .file(let path): return "store file \(path)"
        case .commands(let read, _): return "store command `\(read)`"
        }
    }

    private var role: SecretRole { .token(token) }

    public func read() throws -> TokenStoreDocument {
        let bytes: [UInt8]
        switch location {
        case .file(let path):
            guard FileManager.default.fileExists(atPath: path) else {
                return TokenStoreDocument()
            }
            guard let data = FileManager.default.contents(atPath: path) else {
                throw SecretError(role: role, message: "\(role): cannot read its store file "
                    + "\(path); check its permissions (it should be yours, mode 0600)")
            }
            bytes = Array(data)
        case .commands(let command, _):
            bytes = try SecretReader().runCommand(command, input: [], role: role)
        }
        guard let document = TokenStoreDocument.decode(bytes) else {
            throw SecretError(role: role, message: "\(role): its \(description) does not hold "
                + "a bkfleet token store document; restore it from a backup, or remove it to "
                + "start over (the next rotate then creates a new token)")
        }
        return document
    }

    /// Replaces the stored document: a file is written beside itself (0600), synced and
    /// renamed over the old one; a command gets the document on standard input.
    public func write(_ document: TokenStoreDocument) throws {
        let bytes = document.encoded()
        switch location {
        case .file(let path):
            try Self.writeFileAtomically(path, bytes, role: role)
        case .commands(_, let command):
            _ = try SecretReader().runCommand(command, input: bytes, role: role)
        }
    }

    /// Removes temporary files a killed write left beside a store file (they may hold an
    /// old token's value). Best effort; a command store has nothing of the kind.
    public func removeLeftovers() {
        guard case .file(let path) = location else { return }
        let folder = (path as NSString).deletingLastPathComponent
        let prefix = ".\((path as NSString).lastPathComponent).tmp."
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        for name in names where name.hasPrefix(prefix) {
            unlink(folder + "/" + name)
        }
    }

    /// Replaces the store file atomically, 0600 (AtomicFile); its temporaries carry the
    /// `.tmp.` tag removeLeftovers looks for. A missing folder is created 0700.
    static func writeFileAtomically(_ path: String, _ bytes: [UInt8],
                                    role: SecretRole) throws {
        let folder = (path as NSString).deletingLastPathComponent
        if !FileManager.default.fileExists(atPath: folder) {
            try? FileManager.default.createDirectory(
                atPath: folder, withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700])
        }
        try AtomicFile.write(path, bytes, mode: 0o600, temporaryTag: ".tmp.") { what in
            SecretError(role: role, message: "\(role): cannot \(what) its store file \(path) "
                + "(\(String(cString: strerror(errno)))); check the folder \(folder)")
        }
    }
}

/// An exclusive lock on one token's store, held for a whole rotation so two rotations
/// never both create a token; released when closed or when the process ends.
public final class TokenStoreLock {
    private let fd: Int32
    public let path: String

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }
}

extension TokenStore {
    /// `<store>.lock` beside a store file; for store commands, a file named after the
    /// token in the user's runtime folder (or cache folder without one).
    public var lockPath: String {
        switch location {
        case .file(let path):
            return path + ".lock"
        case .commands:
            let env = ProcessInfo.processInfo.environment
            let runtime = env["XDG_RUNTIME_DIR"].flatMap { $0.isEmpty ? nil : $0 }
            let cache = env["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 }
                ?? NSHomeDirectory() + "/.cache"
            return (runtime ?? cache) + "/bkfleet/token-\(token).lock"
        }
    }

    /// Takes the lock (flock) or fails at once naming who holds it.
    public func lock() throws -> TokenStoreLock {
        let path = lockPath
        let folder = (path as NSString).deletingLastPathComponent
        if !FileManager.default.fileExists(atPath: folder) {
            try? FileManager.default.createDirectory(
                atPath: folder, withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700])
        }
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw SecretError(role: .token(token), message: "token '\(token)': cannot open "
                + "the lock file \(path) (\(String(cString: strerror(errno)))); check the "
                + "folder \(folder)")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            var buffer = [UInt8](repeating: 0, count: 200)
            let count = pread(fd, &buffer, buffer.count, 0)
            close(fd)
            let holder = String(decoding: buffer.prefix(max(count, 0)), as: UTF8.self)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            throw SecretError(role: .token(token), message: "token '\(token)': another "
                + "rotation holds its lock \(path)"
                + (holder.isEmpty ? "" : " (\(holder))") + "; wait for it to finish, then "
                + "rerun; nothing was changed")
        }
        // Who holds it, for the message a second rotation shows.
        let holder = "bkfleet pid \(getpid()) on \(ProcessInfo.processInfo.hostName) since "
            + UTCStamp.iso8601() + "\n"
        _ = ftruncate(fd, 0)
        _ = holder.utf8CString.withUnsafeBufferPointer {
            pwrite(fd, $0.baseAddress, $0.count - 1, 0)
        }
        return TokenStoreLock(fd: fd, path: path)
    }
}
