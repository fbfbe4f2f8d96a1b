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
            // The layout is checked here; the key itself (a P-256 point to decompress) only when
            // `embeddedKey()` is asked for or `carries(_:)` compares it.
            method = .key
            self.value = value
            _ = try Self.multicodecKey(value)
            return
        default:
            throw ATHError(.malformedMessage, "DID method '\(parts[1])' is not supported (did:ath, did:key)")
        }
        self.value = value
    }

    /// A DID already checked, with its text as given (to share another value's storage).
    private init(checked value: String, method: Method) {
        self.value = value
        self.method = method
    }

    /// This DID, its text taken from `text` when they are equal: a value cached for long then
    /// shares the other's storage instead of holding a second copy.
    public func sharingText(of text: String) -> DID {
        value == text ? DID(checked: text, method: method) : self
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
        switch try Self.multicodecKey(value) {
        case (.es256, let bytes):
            guard let k = try? P256.Signing.PublicKey(compressedRepresentation: bytes) else {
                throw ATHError(.malformedMessage, "did:key holds an invalid P-256 key")
            }
            return .p256(k)
        case (.edDSA, let bytes):
            guard let k = try? Curve25519.Signing.PublicKey(rawRepresentation: bytes) else {
                throw ATHError(.malformedMessage, "did:key holds an invalid Ed25519 key")
            }
            return .ed25519(k)
        }
    }

    /// Whether this did:key carries `key`; nil for did:ath. Compares the compressed form, so
    /// the point is never decompressed (a square root mod p) just to be compared.
    public func carries(_ key: PublicKey) throws -> Bool? {
        try carries(key, compressedP256: nil)
    }

    /// `compressedP256`: the key's compressed point when the caller read it from the same bytes
    /// as the key (`PublicKey.read(pem:)`), so that BoringSSL need not convert it.
    func carries(_ key: PublicKey, compressedP256: [UInt8]?) throws -> Bool? {
        guard method == .key else { return nil }
        switch (try Self.multicodecKey(value), key) {
        case ((.es256, let bytes), .p256(let k)): return bytes.elementsEqual(compressedP256 ?? Array(k.compressedRepresentation))
        case ((.edDSA, let bytes), .ed25519(let k)): return bytes.elementsEqual(k.rawRepresentation)
        default: return false
        }
    }

    /// The algorithm and key bytes of a did:key, with the length each multicodec implies.
    private static func multicodecKey(_ value: String) throws -> (SignatureAlgorithm, ArraySlice<UInt8>) {
        let id = value.dropFirst("did:key:".count)
        guard id.first == "z", let bytes = Base58.decode(String(id.dropFirst())), bytes.count > 2 else {
            throw ATHError(.malformedMessage, "did:key is not base58btc multibase")
        }
        switch (bytes[0], bytes[1]) {
        case (0x80, 0x24):
            guard bytes.count == 35, bytes[2] == 0x02 || bytes[2] == 0x03 else {
                throw ATHError(.malformedMessage, "did:key holds an invalid P-256 key")
            }
            return (.es256, bytes.dropFirst(2))
        case (0xED, 0x01):
            guard bytes.count == 34 else { throw ATHError(.malformedMessage, "did:key holds an invalid Ed25519 key") }
            return (.edDSA, bytes.dropFirst(2))
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

    /// Each byte's digit value, -1 outside the alphabet.
    static let digitOf: [Int8] = {
        var table = [Int8](repeating: -1, count: 256)
        for (digit, c) in alphabet.enumerated() { table[Int(c)] = Int8(digit) }
        return table
    }()

    static func decode(_ text: String) -> [UInt8]? {
        guard text.utf8.count <= 256 else { return nil }
        let zeros = text.utf8.prefix { $0 == alphabet[0] }.count
        // Little-endian bytes of the number read so far. Digits are taken five at a time
        // (58^5 < 2^30, so a carry stays far inside 64 bits): a fifth of the passes over the
        // bytes that one digit at a time takes, on every did:key a handshake reads.
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var chunk = 0, scale = 1
        func take() {
            var carry = chunk
            for i in bytes.indices {
                carry += Int(bytes[i]) * scale
                bytes[i] = UInt8(truncatingIfNeeded: carry)
                carry >>= 8
            }
            while carry > 0 {
                bytes.append(UInt8(truncatingIfNeeded: carry))
                carry >>= 8
            }
            chunk = 0
            scale = 1
        }
        for c in text.utf8 {
            let value = digitOf[Int(c)]
            guard value >= 0 else { return nil }
            chunk = chunk * 58 + Int(value)
            scale *= 58
            if scale == 656_356_768 { take() }
        }
        if scale > 1 { take() }
        return [UInt8](repeating: 0, count: zeros) + bytes.reversed()
    }
}
