import Crypto
import Foundation

/// A decentralized identifier naming an agent, a server or a user.
///
/// `did:ath:<name>` names an identity registered with a server (its key comes from the server's
/// registry); `did:key:z...` carries its own key (P-256 or Ed25519, multicodec + base58btc), so
/// it needs no registry.
public struct DID: Sendable, Hashable, Codable, CustomStringConvertible {
    public enum Method: String, Sendable { case ath, key }

    public let value: String
    public let method: Method

    public init(_ value: String) throws {
        let parts = value.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "did", value.utf8.count <= 512 else {
            throw ATHError(.malformedMessage, "'\(value.prefix(64))' is not a DID")
        }
        let id = parts[2]
        switch parts[1] {
        case "ath":
            // did:ath method-specific ids: letters, digits and . _ - (no colons, no percent escapes).
            guard !id.isEmpty, id.utf8.allSatisfy({ b in
                (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || b == 0x2E
                    || b == 0x5F || b == 0x2D
            }) else { throw ATHError(.malformedMessage, "invalid did:ath identifier '\(value.prefix(64))'") }
            method = .ath
        case "key":
            method = .key
            self.value = value
            _ = try embeddedKey()
            return
        default:
            throw ATHError(.malformedMessage, "DID method '\(parts[1])' is not supported (did:ath, did:key)")
        }
        self.value = value
    }

    public init(from decoder: any Decoder) throws {
        try self.init(try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(value)
    }

    public var description: String { value }

    /// did:key for a public key.
    public static func key(_ key: PublicKey) -> DID {
        var bytes: [UInt8]
        switch key {
        case .p256(let k): bytes = [0x80, 0x24] + Array(k.compressedRepresentation)
        case .ed25519(let k): bytes = [0xED, 0x01] + Array(k.rawRepresentation)
        }
        return try! DID("did:key:z" + Base58.encode(bytes))
    }

    /// The key a did:key carries; nil for did:ath, whose key lives in a registry.
    public func embeddedKey() throws -> PublicKey? {
        guard method == .key else { return nil }
        let id = value.dropFirst("did:key:".count)
        guard id.first == "z", let bytes = Base58.decode(String(id.dropFirst())), bytes.count > 2 else {
            throw ATHError(.malformedMessage, "did:key is not base58btc multibase")
        }
        switch (bytes[0], bytes[1]) {
        case (0x80, 0x24):
            guard let k = try? P256.Signing.PublicKey(compressedRepresentation: bytes.dropFirst(2)) else {
                throw ATHError(.malformedMessage, "did:key holds an invalid P-256 key")
            }
            return .p256(k)
        case (0xED, 0x01):
            guard let k = try? Curve25519.Signing.PublicKey(rawRepresentation: bytes.dropFirst(2)) else {
                throw ATHError(.malformedMessage, "did:key holds an invalid Ed25519 key")
            }
            return .ed25519(k)
        default:
            throw ATHError(.unsupportedAlgorithm, "did:key multicodec is not P-256 or Ed25519")
        }
    }
}

/// Bitcoin base58 alphabet, as did:key's multibase 'z' uses.
enum Base58 {
    static let alphabet = Array("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        let zeros = bytes.prefix { $0 == 0 }.count
        var digits: [UInt8] = []
        for byte in bytes {
            var carry = Int(byte)
            for i in digits.indices {
                carry += Int(digits[i]) << 8
                digits[i] = UInt8(carry % 58)
                carry /= 58
            }
            while carry > 0 {
                digits.append(UInt8(carry % 58))
                carry /= 58
            }
        }
        let text = [UInt8](repeating: alphabet[0], count: zeros) + digits.reversed().map { alphabet[Int($0)] }
        return String(decoding: text, as: UTF8.self)
    }

    static func decode(_ text: String) -> [UInt8]? {
        guard text.utf8.count <= 256 else { return nil }
        let zeros = text.utf8.prefix { $0 == alphabet[0] }.count
        var bytes: [UInt8] = []
        for c in text.utf8 {
            guard let value = alphabet.firstIndex(of: c) else { return nil }
            var carry = value
            for i in bytes.indices {
                carry += Int(bytes[i]) * 58
                bytes[i] = UInt8(carry & 0xFF)
                carry >>= 8
            }
            while carry > 0 {
                bytes.append(UInt8(carry & 0xFF))
                carry >>= 8
            }
        }
        return [UInt8](repeating: 0, count: zeros) + bytes.reversed()
    }
}
