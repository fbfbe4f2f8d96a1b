import Crypto
import Foundation
import JWTKit

/// Signs and verifies the protocol's JWTs (user credential, access token, user request) with
/// jwt-kit, adding what jwt-kit leaves to the caller: the `typ` that keeps one kind of token
/// from being accepted as another, and an `alg` that must match the key.
public struct JWTCodec: Sendable {
    let keys: JWTKeyCollection
    public let algorithm: SignatureAlgorithm
    /// The signing key's RFC 7638 thumbprint; nil for a verifier, which has no use for it.
    public let kid: String?

    public init(key: PrivateKey) async throws {
        let serializer = DefaultJWTSerializer(jsonEncoder: ProtocolJSONEncoder())
        keys = JWTKeyCollection(defaultJWTSerializer: serializer)
        algorithm = key.algorithm
        kid = key.publicKey.thumbprint
        switch key {
        case .p256(let k): await keys.add(ecdsa: try ES256PrivateKey(backing: k), serializer: serializer)
        case .ed25519(let k): await keys.add(eddsa: EdDSA.PrivateKey(backing: k), serializer: serializer)
        }
    }

    public init(verifying key: PublicKey) async throws {
        let parser = DefaultJWTParser(jsonDecoder: ProtocolJSONDecoder())
        keys = JWTKeyCollection(defaultJWTParser: parser)
        algorithm = key.algorithm
        kid = nil
        switch key {
        case .p256(let k): await keys.add(ecdsa: try ES256PublicKey(backing: k), parser: parser)
        case .ed25519(let k): await keys.add(eddsa: EdDSA.PublicKey(backing: k), parser: parser)
        }
    }

    public func sign(_ payload: some JWTPayload, typ: String) async throws -> String {
        var header = JWTHeader()
        header.typ = typ
        header.kid = kid
        header.alg = algorithm.rawValue
        return try await keys.sign(payload, header: header)
    }

    /// Verifies the signature, the `typ` and the `alg`; claims are the caller's to check.
    public func verify<P: JWTPayload>(_ token: String, as type: P.Type, typ: String, error code: ATHError.Code) async throws -> P {
        try await verify(token, header: try Self.header(of: token, error: code), as: type, typ: typ, error: code)
    }

    /// The same, for a caller that already read the token's header (`header(of:)`).
    public func verify<P: JWTPayload>(
        _ token: String, header: JOSEHeader, as type: P.Type, typ: String, error code: ATHError.Code
    ) async throws -> P {
        guard header.typ == typ else {
            throw ATHError(code, "token type is '\(header.typ ?? "none")', expected '\(typ)'")
        }
        guard header.alg == algorithm.rawValue else {
            throw ATHError(code, "token algorithm '\(header.alg ?? "none")' does not match the key")
        }
        do {
            return try await keys.verify(token, as: P.self)
        } catch let e as ATHError {
            // The claims did not decode (e.g. a number outside I-JSON's range): the token's own
            // refusal, not a malformed protocol message.
            throw e.code == code ? e : ATHError(code, "token claims are malformed: \(e.message)")
        } catch {
            throw ATHError(code, "token signature or encoding is invalid")
        }
    }

    /// The unverified header: only to choose a key, never to trust.
    ///
    /// Read with our own base64url and JSON tree: jwt-kit's parser decodes the whole token and
    /// tries each JSON kind per header field, 27 µs where this takes a few.
    public static func header(of token: String, error code: ATHError.Code) throws -> JOSEHeader {
        try header(try decoded(parts(of: token, error: code).header, headerRefusal, error: code), error: code)
    }

    private static let headerRefusal = "token header is not base64url JSON"

    private static func header(_ value: JSONValue, error code: ATHError.Code) throws -> JOSEHeader {
        guard case .object(let fields) = value else { throw ATHError(code, headerRefusal) }
        func string(_ name: String) throws -> String? {
            guard let value = fields[name] else { return nil }
            guard case .string(let s) = value else { throw ATHError(code, "token header field '\(name)' is not a string") }
            return s
        }
        return JOSEHeader(typ: try string("typ"), alg: try string("alg"), kid: try string("kid"))
    }

    /// The unverified header and claims as JSON trees, read with our own base64url and parser:
    /// only to find the issuer's key, never to trust.
    public static func unverifiedParts(of token: String, error code: ATHError.Code) throws -> (header: JOSEHeader, claims: JSONValue) {
        let parts = try parts(of: token, error: code)
        let header = try header(try decoded(parts.header, headerRefusal, error: code), error: code)
        return (header, try decoded(parts.claims, "token claims are not base64url JSON", error: code))
    }

    /// The header and claims parts of a compact JWS: exactly two dots, found by scanning rather
    /// than by splitting the token into an array of slices, which cost more than decoding a part.
    private static func parts(of token: String, error code: ATHError.Code) throws -> (header: Substring, claims: Substring) {
        let utf8 = token.utf8
        guard utf8.count <= 16 * 1024, let first = utf8.firstIndex(of: UInt8(ascii: ".")),
            let last = utf8.lastIndex(of: UInt8(ascii: ".")), first != last,
            !utf8[utf8.index(after: first)..<last].contains(UInt8(ascii: "."))
        else { throw ATHError(code, "not a compact JWS") }
        return (token[utf8.startIndex..<first], token[utf8.index(after: first)..<last])
    }

    /// A part base64url-decoded and parsed; `refusal` is the error's message otherwise.
    private static func decoded(_ part: Substring, _ refusal: String, error code: ATHError.Code) throws -> JSONValue {
        guard let bytes = Base64URL.decode(String(part)), let value = try? JSONValue.parse(bytes) else { throw ATHError(code, refusal) }
        return value
    }

    /// The unverified claims: only to find the issuer's key, never to trust.
    public static func unverifiedClaims<P: JWTPayload>(of token: String, as type: P.Type, error code: ATHError.Code) throws -> P {
        try unverified(token, as: type, error: code).claims
    }

    /// The unverified header and claims: only to find the issuer's key.
    public static func unverified<P: JWTPayload>(_ token: String, as type: P.Type, error code: ATHError.Code) throws -> (header: JOSEHeader, claims: P) {
        let header = try header(of: token, error: code)
        do {
            return (header, try DefaultJWTParser().parse(Array(token.utf8), as: P.self).payload)
        } catch {
            throw ATHError(code, "token claims are malformed")
        }
    }
}

/// jwt-kit's JSON decoding, for tokens it verifies, done by the protocol's own parser and
/// coder: Foundation's `JSONDecoder` took about 20 µs of the server's credential check at each
/// handshake (the header's `alg` and `kid`, then the claims), in a profile of `bench core`. It
/// is also stricter: invalid UTF-8 and nesting past the parser's limit are refused.
struct ProtocolJSONDecoder: JWTJSONDecoder {
    func decode<T: Decodable>(_: T.Type, from data: Data) throws -> T {
        try JSONValue.parse(data).decode(T.self)
    }
}

/// jwt-kit's JSON encoding, for tokens it signs: canonical JSON (RFC 8785), so the same claims
/// give the same token bytes in every process and in the published test vectors. For the
/// protocol's claims (ASCII strings and integers) these are the bytes Foundation's encoder wrote
/// with sorted keys and unescaped slashes, which it did at about twice the cost.
struct ProtocolJSONEncoder: JWTJSONEncoder {
    func encode<T: Encodable>(_ value: T) throws -> Data {
        Data(try CanonicalJSON.bytes(of: value))
    }
}

/// The JWS header members the protocol reads (RFC 7515 section 4.1).
public struct JOSEHeader: Sendable, Equatable {
    public var typ: String?
    public var alg: String?
    public var kid: String?
}

struct OpaquePayload: JWTPayload {
    init(from decoder: any Decoder) throws {}
    func encode(to encoder: any Encoder) throws {}
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}
