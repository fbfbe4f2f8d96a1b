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
        keys = JWTKeyCollection(defaultJWTSerializer: DefaultJWTSerializer(jsonEncoder: Self.encoder))
        algorithm = key.algorithm
        kid = key.publicKey.thumbprint
        switch key {
        case .p256(let k): await keys.add(ecdsa: try ES256PrivateKey(backing: k), serializer: DefaultJWTSerializer(jsonEncoder: Self.encoder))
        case .ed25519(let k): await keys.add(eddsa: EdDSA.PrivateKey(backing: k), serializer: DefaultJWTSerializer(jsonEncoder: Self.encoder))
        }
    }

    /// Sorted keys: the same claims give the same token bytes, in every process (and in the
    /// published test vectors).
    static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    public init(verifying key: PublicKey) async throws {
        keys = JWTKeyCollection()
        algorithm = key.algorithm
        kid = nil
        switch key {
        case .p256(let k): await keys.add(ecdsa: try ES256PublicKey(backing: k))
        case .ed25519(let k): await keys.add(eddsa: EdDSA.PublicKey(backing: k))
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
        let header = try Self.header(of: token, error: code)
        guard header.typ == typ else {
            throw ATHError(code, "token type is '\(header.typ ?? "none")', expected '\(typ)'")
        }
        guard header.alg == algorithm.rawValue else {
            throw ATHError(code, "token algorithm '\(header.alg ?? "none")' does not match the key")
        }
        do {
            return try await keys.verify(token, as: P.self)
        } catch let e as ATHError {
            throw e
        } catch {
            throw ATHError(code, "token signature or encoding is invalid")
        }
    }

    /// The unverified header: only to choose a key, never to trust.
    ///
    /// Read with our own base64url and JSON tree: jwt-kit's parser decodes the whole token and
    /// tries each JSON kind per header field, 27 µs where this takes a few.
    public static func header(of token: String, error code: ATHError.Code) throws -> JOSEHeader {
        guard case .object(let fields) = try part(0, of: token, error: code) else {
            throw ATHError(code, "token header is not base64url JSON")
        }
        func string(_ name: String) throws -> String? {
            guard let value = fields[name] else { return nil }
            guard case .string(let s) = value else { throw ATHError(code, "token header field '\(name)' is not a string") }
            return s
        }
        return JOSEHeader(typ: try string("typ"), alg: try string("alg"), kid: try string("kid"))
    }

    /// The unverified claims as a JSON tree, read as the header is: only to find the issuer's
    /// key, never to trust.
    public static func unverifiedPayload(of token: String, error code: ATHError.Code) throws -> JSONValue {
        try part(1, of: token, error: code)
    }

    /// Part `index` (0 header, 1 claims) of a compact JWS, base64url-decoded and parsed.
    private static func part(_ index: Int, of token: String, error code: ATHError.Code) throws -> JSONValue {
        guard token.utf8.count <= 16 * 1024 else { throw ATHError(code, "not a compact JWS") }
        let parts = token.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw ATHError(code, "not a compact JWS") }
        guard let bytes = Base64URL.decode(String(decoding: parts[index], as: UTF8.self)), let value = try? JSONValue.parse(bytes) else {
            throw ATHError(code, index == 0 ? "token header is not base64url JSON" : "token claims are not base64url JSON")
        }
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
