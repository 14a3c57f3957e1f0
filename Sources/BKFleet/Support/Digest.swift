// SHA-256 through OpenSSL's libcrypto, and the short fingerprint bkfleet shows for
// secrets. A fingerprint identifies a value without revealing it; nothing here keeps or
// prints the value itself.
import CCrypto

public enum Digest {
    /// The SHA-256 of `bytes` as 64 lowercase hex digits.
    public static func sha256Hex<Bytes: Collection>(_ bytes: Bytes) -> String
    where Bytes.Element == UInt8 {
        var out = [UInt8](repeating: 0, count: Int(SHA256_DIGEST_LENGTH))
        let input = Array(bytes)
        input.withUnsafeBufferPointer { buf in
            _ = SHA256(buf.baseAddress, buf.count, &out)
        }
        return out.map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }

    public static func sha256Hex(_ text: String) -> String {
        sha256Hex(Array(text.utf8))
    }

    /// `sha256:` and the first 12 hex digits of the SHA-256 of the stored bytes.
    public static func fingerprint<Bytes: Collection>(_ bytes: Bytes) -> String
    where Bytes.Element == UInt8 {
        fingerprint(hex: sha256Hex(bytes))
    }

    /// The short form of a full hex digest, e.g. one a host reported.
    /// A host's word for what is no file (`not-a-regular-file`) stays as it is.
    public static func fingerprint(hex: String) -> String {
        guard hex.allSatisfy(\.isHexDigit) else { return "(\(hex))" }
        return "sha256:" + hex.prefix(12)
    }
}
