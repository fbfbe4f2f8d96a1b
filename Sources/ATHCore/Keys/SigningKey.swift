import Crypto
import CryptoExtras
import Foundation

/// A public key of a peer: an agent, a server or a user.
///
/// Keys travel as PEM (SubjectPublicKeyInfo) in handshake messages and as JWK in registries;
/// both forms of the same key are one value.
public enum PublicKey: Sendable, Hashable {
    case p256(P256.Signing.PublicKey)
    case ed25519(Curve25519.Signing.PublicKey)

    public var algorithm: SignatureAlgorithm {
        switch self {
        case .p256: .es256
        case .ed25519: .edDSA
        }
    }

    public init(pem: String) throws {
        self = try Self.read(pem: pem).key
    }

    /// The key, and for a P-256 key read from its DER the compressed form of its point taken
    /// from the DER's own bytes: what a did:key holds, without asking BoringSSL to convert the
    /// parsed point back (5.4 µs, on every step 1).
    static func read(pem: String) throws -> (key: PublicKey, compressedP256: [UInt8]?) {
        guard let der = Self.subjectPublicKeyInfo(pem: pem) else { return (try readByLibrary(pem: pem), nil) }
        // The one form every P-256 key in a handshake takes: this fixed header (SEQUENCE,
        // id-ecPublicKey, prime256v1, BIT STRING) and the uncompressed point 04 || x || y. It is
        // matched whole and the point handed to swift-crypto, which checks it is on the curve;
        // swift-asn1's general parse of the same 91 bytes cost more than the rest of the read.
        if der.count == 91, der.starts(with: Self.p256Header),
            let key = try? P256.Signing.PublicKey(x963Representation: der.dropFirst(Self.p256Header.count))
        {
            let x = der[(der.startIndex + 27)..<(der.startIndex + 59)]
            return (.p256(key), [0x02 | (der[der.index(before: der.endIndex)] & 1)] + x)
        }
        if let key = try? P256.Signing.PublicKey(derRepresentation: der) { return (.p256(key), nil) }
        return (try readByLibrary(pem: pem), nil)
    }

    private static let p256Header: [UInt8] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03,
        0x01, 0x07, 0x03, 0x42, 0x00,
    ]

    private static func readByLibrary(pem: String) throws -> PublicKey {
        if let key = try? P256.Signing.PublicKey(pemRepresentation: pem) {
            return .p256(key)
        } else if let key = try? Curve25519.Signing.PublicKey(pemRepresentation: pem) {
            return .ed25519(key)
        } else {
            throw ATHError(.unsupportedAlgorithm, "public key is not a P-256 or Ed25519 SubjectPublicKeyInfo PEM")
        }
    }

    /// The DER of a "PUBLIC KEY" PEM block, for a key to parse from DER: swift-crypto's PEM
    /// parser took two thirds of the 15 µs a P-256 key cost, on every step 1 a server answers.
    /// Anything this does not read goes to swift-crypto's PEM parser as before.
    static func subjectPublicKeyInfo(pem: String) -> Data? {
        let begin = "-----BEGIN PUBLIC KEY-----".utf8, end = "-----END PUBLIC KEY-----".utf8
        var text = Substring(pem).utf8
        while let last = text.last, last == UInt8(ascii: "\n") || last == UInt8(ascii: "\r") { text.removeLast() }
        guard text.count < 1024, text.starts(with: begin), text.reversed().starts(with: end.reversed()) else { return nil }
        let body = text.dropFirst(begin.count).dropLast(end.count).filter { $0 != UInt8(ascii: "\n") && $0 != UInt8(ascii: "\r") }
        return Data(base64Encoded: Data(body))
    }

    public var pem: String {
        switch self {
        case .p256(let k): Self.pem(der: Self.p256Header + k.x963Representation)
        case .ed25519(let k): k.pemRepresentation
        }
    }

    /// A "PUBLIC KEY" PEM block as swift-crypto writes one (base64 in lines of 64, no newline
    /// after the end line), for the one fixed P-256 form `read` matches: the library's general
    /// DER and PEM serialisation was about 2 % of the server's CPU per handshake, a stored
    /// handshake holding its client's key as PEM and being written at each step.
    static func pem(der: [UInt8]) -> String {
        let base64 = Data(der).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
        return "-----BEGIN PUBLIC KEY-----\n" + base64 + "\n-----END PUBLIC KEY-----"
    }

    /// Verifies a raw signature (R||S for ES256, 64 bytes for EdDSA) over `message`.
    public func isValidSignature(_ signature: some DataProtocol, for message: some DataProtocol) -> Bool {
        switch self {
        case .p256(let k):
            guard let sig = try? P256.Signing.ECDSASignature(rawRepresentation: signature) else { return false }
            return k.isValidSignature(sig, for: SHA256.hash(data: Data(message)))
        case .ed25519(let k):
            return k.isValidSignature(Data(signature), for: Data(message))
        }
    }

    /// The JWK (RFC 7517) form, public members only.
    public var jwk: JWK {
        switch self {
        case .p256(let k):
            let raw = k.rawRepresentation
            return JWK(kty: "EC", crv: "P-256", x: Base64URL.encode(raw.prefix(32)), y: Base64URL.encode(raw.suffix(32)))
        case .ed25519(let k):
            return JWK(kty: "OKP", crv: "Ed25519", x: Base64URL.encode(k.rawRepresentation), y: nil)
        }
    }

    public init(jwk: JWK) throws {
        switch (jwk.kty, jwk.crv) {
        case ("EC", "P-256"):
            guard let x = Base64URL.decode(jwk.x), let y = jwk.y.flatMap(Base64URL.decode), x.count == 32, y.count == 32,
                let key = try? P256.Signing.PublicKey(rawRepresentation: x + y)
            else { throw ATHError(.malformedMessage, "invalid P-256 JWK") }
            self = .p256(key)
        case ("OKP", "Ed25519"):
            guard let x = Base64URL.decode(jwk.x), let key = try? Curve25519.Signing.PublicKey(rawRepresentation: x)
            else { throw ATHError(.malformedMessage, "invalid Ed25519 JWK") }
            self = .ed25519(key)
        default:
            throw ATHError(.unsupportedAlgorithm, "JWK \(jwk.kty)/\(jwk.crv ?? "-") is not supported")
        }
    }

    /// RFC 7638 thumbprint: the key identifier (kid) used in JWT headers.
    public var thumbprint: String {
        let canonical = try! CanonicalJSON.bytes(of: jwk)
        return Base64URL.encode(Data(SHA256.hash(data: canonical)))
    }

    /// The raw key bytes (x||y for P-256, the 32 bytes for Ed25519): what identifies the key
    /// whatever encoding it came in, and far cheaper to compare than PEM text.
    var rawBytes: Data {
        switch self {
        case .p256(let k): k.rawRepresentation
        case .ed25519(let k): k.rawRepresentation
        }
    }

    public static func == (a: Self, b: Self) -> Bool { a.algorithm == b.algorithm && a.rawBytes == b.rawBytes }
    public func hash(into h: inout Hasher) {
        h.combine(algorithm)
        h.combine(rawBytes)
    }
}

/// Encoded as its PEM text, the form handshake messages carry.
extension PublicKey: Codable {
    public init(from decoder: any Decoder) throws {
        try self.init(pem: try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(pem)
    }
}

/// A JSON Web Key holding a public EC or OKP key.
public struct JWK: Codable, Sendable, Hashable {
    public var kty: String
    public var crv: String?
    public var x: String
    public var y: String?

    public init(kty: String, crv: String?, x: String, y: String?) {
        self.kty = kty
        self.crv = crv
        self.x = x
        self.y = y
    }
}

/// A private signing key held by one party.
public enum PrivateKey: Sendable {
    case p256(P256.Signing.PrivateKey)
    case ed25519(Curve25519.Signing.PrivateKey)

    public static func generate(_ algorithm: SignatureAlgorithm = .es256) -> PrivateKey {
        switch algorithm {
        case .es256: .p256(P256.Signing.PrivateKey())
        case .edDSA: .ed25519(Curve25519.Signing.PrivateKey())
        }
    }

    public var algorithm: SignatureAlgorithm { publicKey.algorithm }

    public var publicKey: PublicKey {
        switch self {
        case .p256(let k): .p256(k.publicKey)
        case .ed25519(let k): .ed25519(k.publicKey)
        }
    }

    /// PKCS#8 PEM, the file format of `ath keygen`.
    public var pem: String {
        switch self {
        case .p256(let k): k.pemRepresentation
        case .ed25519(let k): k.pemRepresentation
        }
    }

    public init(pem: String) throws {
        if let key = try? P256.Signing.PrivateKey(pemRepresentation: pem) {
            self = .p256(key)
        } else if let key = try? Curve25519.Signing.PrivateKey(pemRepresentation: pem) {
            self = .ed25519(key)
        } else {
            throw ATHError(.unsupportedAlgorithm, "private key is not a P-256 or Ed25519 PKCS#8 PEM")
        }
    }

    /// A raw signature: R||S (64 bytes) for ES256, as JOSE encodes it; 64 bytes for EdDSA.
    public func signature(for message: some DataProtocol) throws -> Data {
        switch self {
        case .p256(let k): try k.signature(for: SHA256.hash(data: Data(message))).rawRepresentation
        case .ed25519(let k): try k.signature(for: Data(message))
        }
    }
}
