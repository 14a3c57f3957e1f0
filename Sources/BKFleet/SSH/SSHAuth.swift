// Public-key authentication: from an identity file (with an optional passphrase) or from
// the keys an ssh-agent offers. RSA keys are refused before anything is sent, because
// libssh2 1.10 signs only with ssh-rsa (SHA-1), which OpenSSH 8.8 and later reject.
// No password or keyboard-interactive authentication, on purpose.
import CLibSSH2
import Foundation

/// What bkfleet can tell about a private key file without decrypting it.
struct IdentityFileInfo: Equatable {
    /// `ssh-ed25519`, `ssh-rsa`, `ecdsa-sha2-nistp256`...; nil when the format hides it.
    var keyType: String?
    var encrypted: Bool

    /// Reads the file's header. The key's bytes are secret: they are parsed here only for
    /// the public parts (type, cipher name) and never copied into a message.
    static func inspect(path: String) throws -> IdentityFileInfo {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            let reason = FileManager.default.fileExists(atPath: path)
                ? "cannot be read (check its owner and mode)"
                : "does not exist; give the path of an existing private key"
            throw SSHError.identityUnreadable(path: path, reason: reason)
        }
        let text = String(decoding: data, as: UTF8.self)

        // Five shapes: OpenSSH's own format, then four PEM flavours.
        if let body = pemBody(text, label: "OPENSSH PRIVATE KEY") {
            return try openSSHInfo(body, path: path)
        }
        let pemEncrypted = text.contains("Proc-Type: 4,ENCRYPTED")
        if pemBody(text, label: "RSA PRIVATE KEY") != nil {
            return IdentityFileInfo(keyType: "ssh-rsa", encrypted: pemEncrypted)
        }
        if pemBody(text, label: "EC PRIVATE KEY") != nil {
            return IdentityFileInfo(keyType: "ecdsa", encrypted: pemEncrypted)
        }
        if pemBody(text, label: "ENCRYPTED PRIVATE KEY") != nil {
            return IdentityFileInfo(keyType: nil, encrypted: true)
        }
        if let body = pemBody(text, label: "PRIVATE KEY") {
            // PKCS#8 names its algorithm by OID; rsaEncryption is 1.2.840.113549.1.1.1.
            let rsaOID: [UInt8] = [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d,
                                   0x01, 0x01, 0x01]
            let der = [UInt8](body)
            let isRSA = der.count >= rsaOID.count
                && (0...(der.count - rsaOID.count)).contains { der[$0..<$0 + rsaOID.count]
                    .elementsEqual(rsaOID) }
            return IdentityFileInfo(keyType: isRSA ? "ssh-rsa" : nil, encrypted: false)
        }
        if text.hasPrefix("ssh-") || text.hasPrefix("ecdsa-") {
            throw SSHError.identityUnreadable(
                path: path, reason: "is a public key; give the private key file (without .pub)")
        }
        throw SSHError.identityUnreadable(path: path, reason: "is not a private key file")
    }

    /// The base64-decoded body between `-----BEGIN label-----` and `-----END label-----`.
    private static func pemBody(_ text: String, label: String) -> Data? {
        guard let begin = text.range(of: "-----BEGIN \(label)-----"),
              let end = text.range(of: "-----END \(label)-----",
                                   range: begin.upperBound..<text.endIndex)
        else { return nil }
        let lines = text[begin.upperBound..<end.lowerBound]
            .split(whereSeparator: \.isNewline)
            .filter { !$0.contains(":") }  // PEM headers such as Proc-Type
        return Data(base64Encoded: lines.joined(), options: .ignoreUnknownCharacters) ?? Data()
    }

    /// openssh-key-v1: magic, cipher name, KDF name, KDF options, key count, then the
    /// public key blob, all in clear even when the private part is encrypted.
    private static func openSSHInfo(_ body: Data, path: String) throws -> IdentityFileInfo {
        let magic = Array("openssh-key-v1".utf8) + [0]
        let bytes = [UInt8](body)
        guard bytes.starts(with: magic) else {
            throw SSHError.identityUnreadable(path: path,
                                              reason: "has an OpenSSH header but no key in it")
        }
        var reader = SSHWireReader(Array(bytes[magic.count...]))
        guard let cipher = reader.string(), reader.string() != nil, reader.string() != nil,
              let count = reader.uint32(), count >= 1, let publicBlob = reader.string()
        else {
            throw SSHError.identityUnreadable(path: path, reason: "is a damaged OpenSSH key")
        }
        var blobReader = SSHWireReader(publicBlob)
        let type = blobReader.string().map { String(decoding: $0, as: UTF8.self) }
        return IdentityFileInfo(keyType: type, encrypted: cipher != Array("none".utf8))
    }
}

extension SSHSession {
    /// Authenticates as `user`, bounded by the timeout given to `connect`. Throws a
    /// specific `SSHError` for an RSA key, a missing or unreadable file, a missing or
    /// wrong passphrase, an unreachable agent, and a key the server refuses.
    public func authenticate(user: String, identity: SSHIdentity) throws {
        let deadline = Deadline(seconds: stepTimeout)
        switch identity {
        case .file(let path, let passphrase):
            try authenticate(user: user, keyFile: path, passphrase: passphrase,
                             deadline: deadline)
        case .agent:
            try authenticateWithAgent(user: user, deadline: deadline)
        }
    }

    private func authenticate(user: String, keyFile path: String, passphrase: [UInt8]?,
                              deadline: Deadline) throws {
        let info = try IdentityFileInfo.inspect(path: path)
        if info.keyType == "ssh-rsa" { throw SSHError.rsaIdentity(source: path) }
        if info.encrypted && passphrase == nil { throw SSHError.passphraseNeeded(path: path) }

        // A NUL-terminated copy for libssh2, wiped once libssh2 is done with it.
        // LIMITATION: the caller's own copy of the passphrase is not wiped here.
        var secret = (passphrase ?? []).map { CChar(bitPattern: $0) } + [0]
        defer { for i in secret.indices { secret[i] = 0 } }
        let hasPassphrase = passphrase != nil
        let rc = try attempt(
            deadline, timeout: .timedOut(host: endpoint.label,
                                         step: "authentication as '\(user)'",
                                         seconds: deadline.seconds)
        ) { raw in
            secret.withUnsafeBufferPointer { phrase in
                // NULL public key path: libssh2 derives the public key from the private one.
                libssh2_userauth_publickey_fromfile_ex(
                    raw, user, UInt32(user.utf8.count), nil, path,
                    hasPassphrase ? phrase.baseAddress : nil)
            }
        }
        if rc == 0 { return }

        let (code, message) = lastError()
        if Self.isTransportLoss(code) {
            throw SSHError.connectionLost(host: endpoint.label, step: "authentication",
                                          message: message)
        }
        // Three failures: the key file could not be used (wrong passphrase when it is
        // encrypted), or the server refused the key.
        if code == LIBSSH2_ERROR_FILE || code == LIBSSH2_ERROR_KEYFILE_AUTH_FAILED {
            if info.encrypted { throw SSHError.passphraseWrong(path: path) }
            throw SSHError.identityUnreadable(path: path,
                                              reason: "libssh2 cannot use it: \(message)")
        }
        throw SSHError.authenticationFailed(host: endpoint.label, user: user,
                                            identity: "identity file \(path)",
                                            message: message)
    }

    private func authenticateWithAgent(user: String, deadline: Deadline) throws {
        guard let socketPath = ProcessInfo.processInfo.environment["SSH_AUTH_SOCK"],
              !socketPath.isEmpty else {
            throw SSHError.agentUnavailable(reason: "SSH_AUTH_SOCK is not set")
        }
        guard let agent = locked({ libssh2_agent_init($0) }) ?? nil else {
            throw SSHError.agentUnavailable(reason: "libssh2 could not create an agent client")
        }
        defer {
            locked { _ in
                _ = libssh2_agent_disconnect(agent)
                libssh2_agent_free(agent)
            }
        }
        if locked({ _ in libssh2_agent_connect(agent) }) != 0 {
            throw SSHError.agentUnavailable(reason: "cannot connect to \(socketPath)")
        }
        if locked({ _ in libssh2_agent_list_identities(agent) }) != 0 {
            throw SSHError.agentUnavailable(reason: "the agent at \(socketPath) did not list "
                                            + "its keys")
        }

        // Try each key in the agent's order, skipping RSA keys (they cannot succeed and
        // would spend the server's MaxAuthTries).
        var previous: UnsafeMutablePointer<libssh2_agent_publickey>?
        var tried: [String] = []
        var skippedRSA = 0
        var lastMessage = "no key was accepted"
        while true {
            var key: UnsafeMutablePointer<libssh2_agent_publickey>?
            let rc = locked { _ in libssh2_agent_get_identity(agent, &key, previous) } ?? -1
            guard rc == 0, let key else { break }
            previous = key
            let blob = Array(UnsafeBufferPointer(start: key.pointee.blob,
                                                 count: Int(key.pointee.blob_len)))
            var reader = SSHWireReader(blob)
            let type = reader.string().map { String(decoding: $0, as: UTF8.self) } ?? "?"
            if type == "ssh-rsa" {
                skippedRSA += 1
                continue
            }
            let auth = try attempt(
                deadline, timeout: .timedOut(host: endpoint.label,
                                             step: "authentication as '\(user)'",
                                             seconds: deadline.seconds)
            ) { _ in libssh2_agent_userauth(agent, user, key) }
            if auth == 0 { return }
            let (code, message) = lastError()
            if Self.isTransportLoss(code) {
                throw SSHError.connectionLost(host: endpoint.label, step: "authentication",
                                              message: message)
            }
            lastMessage = message
            tried.append(SSHHostKey(type: type, blob: blob).fingerprint)
        }

        if tried.isEmpty && skippedRSA > 0 { throw SSHError.rsaIdentity(source: "ssh-agent") }
        if tried.isEmpty {
            throw SSHError.agentUnavailable(reason: "the agent at \(socketPath) holds no "
                                            + "usable key; `ssh-add` an ed25519 key")
        }
        throw SSHError.authenticationFailed(
            host: endpoint.label, user: user,
            identity: "ssh-agent keys \(tried.joined(separator: ", "))", message: lastMessage)
    }
}
