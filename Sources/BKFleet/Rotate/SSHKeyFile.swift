// The local side of an SSH key rotation: a new ed25519 pair from `ssh-keygen`, the key
// file replaced atomically with the old key kept beside it (`<file>.previous`), the
// public key saved as `<file>.pub`, OpenSSH `SHA256:` fingerprints (beside `sha256:`).
// It never talks to a host and never prints or logs a private key; only `file` key
// sources can be written, env and command sources are refused.
import CCrypto
import Foundation

/// A freshly generated key pair. The private bytes exist only in memory and in the key
/// file; the temporary folder ssh-keygen wrote them to is gone when this is returned.
struct GeneratedKey {
    var privateKey: [UInt8]
    /// One OpenSSH line: `ssh-ed25519 AAAA... comment`.
    var publicKey: String
}

/// What the key file and its companions hold right now.
struct KeyFileState {
    /// The file's bytes; nil when it does not exist yet.
    var current: [UInt8]?
    /// `<file>.previous`: the key agents ran before an unfinished rotation.
    var previous: [UInt8]?

    /// A rotation wrote a new key and was not finished with `--finish`. A previous file
    /// equal to the current one is a rotation killed before it wrote the new key.
    var inProgress: Bool {
        guard let current, let previous else { return false }
        return SecretReader.trimmingTrailingNewlines(current)
            != SecretReader.trimmingTrailingNewlines(previous)
    }
}

struct SSHKeyFile {
    /// The `[ssh_keys.NAME]` name, for messages.
    var name: String
    var path: String

    var previousPath: String { path + ".previous" }
    var publicPath: String { path + ".pub" }
    private var role: SecretRole { .sshKey(name) }

    /// The key file behind `[ssh_keys.NAME]`; env and command sources cannot be written,
    /// so they are refused with what to do instead. `agents` names who uses the key.
    static func writable(_ secret: NamedSecret, agents: [String]) throws -> SSHKeyFile {
        guard case .file(let path) = secret.source else {
            let kind: String
            switch secret.source {
            case .environment(let name): kind = "environment variable \(name)"
            case .command(let command): kind = "command `\(command)`"
            default: kind = "a source bkfleet cannot write"
            }
            throw SecretError(role: .sshKey(secret.name), message: "\(secret.location): "
                + "SSH key '\(secret.name)' (used by agent \(agents.joined(separator: ", ")))"
                + " comes from \(kind), which bkfleet cannot write. Either set file = \"...\" "
                + "in [ssh_keys.\(secret.name)] and rerun, or rotate it by hand: generate a "
                + "key, store it where the source reads it, run 'bkfleet apply'. Nothing "
                + "was changed")
        }
        return SSHKeyFile(name: secret.name, path: path)
    }

    func read() throws -> KeyFileState {
        KeyFileState(current: try readIfPresent(path), previous: try readIfPresent(previousPath))
    }

    private func readIfPresent(_ file: String) throws -> [UInt8]? {
        guard FileManager.default.fileExists(atPath: file) else { return nil }
        guard let data = FileManager.default.contents(atPath: file) else {
            throw SecretError(role: role, message: "\(role): cannot read \(file); check its "
                + "permissions (it should be yours, mode 0600)")
        }
        return Array(data)
    }

    /// Keeps the current key as `<file>.previous` (unless an unfinished rotation already
    /// did), then puts `key` in the file and its public half in `<file>.pub`. Each file is
    /// replaced atomically, so a crash leaves either the old or the new content.
    func install(_ key: GeneratedKey) throws {
        let state = try read()
        if let current = state.current, !state.inProgress {
            // Written first: if bkfleet dies after it, the file still holds the old key
            // and the next run starts over (see KeyFileState.inProgress).
            try Self.writeAtomically(previousPath, current, mode: 0o600, role: role)
        }
        try Self.writeAtomically(path, key.privateKey, mode: 0o600, role: role)
        try savePublicKey(key.publicKey)
    }

    /// `<file>.pub` (0644: it is public), replaced atomically.
    func savePublicKey(_ line: String) throws {
        try Self.writeAtomically(publicPath, Array((line + "\n").utf8), mode: 0o644, role: role)
    }

    /// The public line saved beside the key, when it belongs to `privateKey`.
    func savedPublicKey(matching privateKey: [UInt8]) -> String? {
        guard let text = try? String(contentsOfFile: publicPath, encoding: .utf8),
              let line = text.split(separator: "\n").first.map(String.init),
              let blob = SSHKeyFingerprint.publicBlob(ofPublicLine: line),
              blob == SSHKeyFingerprint.publicBlob(ofPrivateKey: privateKey) else { return nil }
        return line
    }

    /// Drops `<file>.previous`. Returns false when there was none.
    func dropPrevious() throws -> Bool {
        guard FileManager.default.fileExists(atPath: previousPath) else { return false }
        guard unlink(previousPath) == 0 else {
            throw SecretError(role: role, message: "\(role): cannot remove \(previousPath) "
                + "(\(String(cString: strerror(errno)))); remove it by hand")
        }
        AtomicFile.syncFolder(of: previousPath)
        return true
    }

    /// Replaces `file` atomically with `mode` (AtomicFile); errors name the file.
    static func writeAtomically(_ file: String, _ bytes: [UInt8], mode: mode_t,
                                role: SecretRole) throws {
        let folder = (file as NSString).deletingLastPathComponent
        try AtomicFile.write(file, bytes, mode: mode, temporaryTag: ".") { what in
            SecretError(role: role, message: "\(role): cannot \(what) \(file) "
                + "(\(String(cString: strerror(errno)))); check the folder \(folder) "
                + "exists and is writable by you")
        }
    }
}

enum SSHKeyGenerator {
    /// Runs `ssh-keygen -t ed25519 -N '' -C comment` into a private temporary folder
    /// (0700) and removes the folder before returning, whatever happened.
    static func generate(comment: String,
                         environment: [String: String] = ProcessInfo.processInfo.environment)
        throws -> GeneratedKey {
        guard let keygen = executable("ssh-keygen", path: environment["PATH"]) else {
            throw RotateError(description: "ssh-keygen is not on PATH; install the OpenSSH "
                              + "client (Debian: openssh-client) and rerun. Nothing was changed")
        }
        var template = Array((NSTemporaryDirectory() + "/bkfleet-keygen-XXXXXX").utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw RotateError(description: "cannot create a private temporary folder in "
                              + "\(NSTemporaryDirectory()) (\(String(cString: strerror(errno))))"
                              + "; set TMPDIR to a writable folder")
        }
        let folder = String(cString: template)
        defer {
            for file in ["key", "key.pub"] { unlink(folder + "/" + file) }
            rmdir(folder)
        }
        chmod(folder, 0o700)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: keygen)
        process.arguments = ["-q", "-t", "ed25519", "-N", "", "-C", comment,
                             "-f", folder + "/key"]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        let errors = Pipe()
        process.standardError = errors
        do {
            try process.run()
        } catch {
            throw RotateError(description: "cannot run \(keygen): \(error)")
        }
        let message = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0,
              let privateKey = FileManager.default.contents(atPath: folder + "/key"),
              let publicKey = try? String(contentsOfFile: folder + "/key.pub", encoding: .utf8)
        else {
            let said = String(decoding: message, as: UTF8.self)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            throw RotateError(description: "\(keygen) -t ed25519 failed (status "
                              + "\(process.terminationStatus)\(said.isEmpty ? "" : ": " + said))"
                              + "; nothing was changed")
        }
        return GeneratedKey(privateKey: Array(privateKey),
                            publicKey: publicKey.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    static func executable(_ name: String, path: String?) -> String? {
        let folders = (path ?? "/usr/bin:/bin").split(separator: ":").map(String.init)
        return (folders + ["/usr/bin"]).map { $0 + "/" + name }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}

/// OpenSSH's `SHA256:` fingerprint (as `ssh-keygen -l` prints it), taken from the public
/// key blob. For a private key the blob is read from the unencrypted header of the
/// `openssh-key-v1` format, so no passphrase and no subprocess is needed.
public enum SSHKeyFingerprint {
    /// `SHA256:...` of the key's public half, or `sha256:` and 12 hex digits of the bytes
    /// for a key in another format (PEM), which bkfleet does not parse.
    public static func of(privateKey bytes: [UInt8]) -> String {
        guard let blob = publicBlob(ofPrivateKey: bytes) else {
            return Digest.fingerprint(bytes)
        }
        return of(blob: blob)
    }

    /// How rotate names a key: OpenSSH's fingerprint for registering the public key, then
    /// the `sha256:` one that plan and status show, both taken from `bytes`, which must be
    /// exactly what is pushed (SecretReader's value: one final newline).
    public static func both(pushed bytes: [UInt8]) -> String {
        let short = Digest.fingerprint(bytes)
        guard let blob = publicBlob(ofPrivateKey: bytes) else { return short }
        return of(blob: blob) + " (\(short))"
    }

    public static func of(blob: [UInt8]) -> String {
        var digest = [UInt8](repeating: 0, count: Int(SHA256_DIGEST_LENGTH))
        blob.withUnsafeBufferPointer { _ = SHA256($0.baseAddress, $0.count, &digest) }
        let encoded = Data(digest).base64EncodedString()
        return "SHA256:" + encoded.replacingOccurrences(of: "=", with: "")
    }

    /// The public key blob of an `openssh-key-v1` private key (first key only).
    public static func publicBlob(ofPrivateKey bytes: [UInt8]) -> [UInt8]? {
        let text = String(decoding: bytes, as: UTF8.self)
        let begin = "-----BEGIN OPENSSH PRIVATE KEY-----"
        let end = "-----END OPENSSH PRIVATE KEY-----"
        guard let start = text.range(of: begin), let stop = text.range(of: end),
              start.upperBound <= stop.lowerBound else { return nil }
        let body = text[start.upperBound..<stop.lowerBound].filter { !$0.isWhitespace }
        guard let data = Data(base64Encoded: String(body)) else { return nil }
        var reader = ByteReader(bytes: Array(data))
        let magic = Array("openssh-key-v1".utf8) + [0]
        guard reader.take(magic.count) == magic,
              reader.string() != nil,          // cipher
              reader.string() != nil,          // KDF
              reader.string() != nil,          // KDF options
              let count = reader.uint32(), count >= 1 else { return nil }
        return reader.string()
    }

    /// The blob of a public key line `type base64 [comment]`.
    public static func publicBlob(ofPublicLine line: String) -> [UInt8]? {
        let words = line.split(separator: " ")
        guard words.count >= 2, let data = Data(base64Encoded: String(words[1])) else {
            return nil
        }
        return Array(data)
    }

    /// `type base64` for a private key's public half, for a `.pub` file.
    static func publicLine(ofPrivateKey bytes: [UInt8], comment: String) -> String? {
        guard let blob = publicBlob(ofPrivateKey: bytes) else { return nil }
        var reader = ByteReader(bytes: blob)
        guard let type = reader.string() else { return nil }
        return String(decoding: type, as: UTF8.self) + " "
            + Data(blob).base64EncodedString() + " " + comment
    }
}

/// SSH wire-format reading: big-endian uint32 and length-prefixed strings.
private struct ByteReader {
    var bytes: [UInt8]
    var offset = 0

    mutating func take(_ count: Int) -> [UInt8]? {
        guard count >= 0, offset + count <= bytes.count else { return nil }
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }

    mutating func uint32() -> UInt32? {
        guard let raw = take(4) else { return nil }
        return raw.reduce(0) { $0 << 8 | UInt32($1) }
    }

    mutating func string() -> [UInt8]? {
        guard let length = uint32(), length < 1 << 20 else { return nil }
        return take(Int(length))
    }
}
