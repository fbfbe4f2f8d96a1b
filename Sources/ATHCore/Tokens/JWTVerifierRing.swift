import JWTKit

/// Verifies the server's own tokens under any key of its ring, chosen by the token's `kid`.
///
/// With one verifying key, rotating the server key ended every session at once: tokens signed
/// under the old key stopped verifying on each instance as it restarted with the new one. A token
/// names its key (the RFC 7638 thumbprint, as `JWTCodec` signs it); a `kid` outside the ring is
/// refused rather than tried against every key.
public struct JWTVerifierRing: Sendable {
    let verifiers: [String: JWTCodec]
    /// For a token without a `kid`: the token key's.
    let current: JWTCodec

    /// `keys[0]` is the current token key.
    public init(keys: [PublicKey]) async throws {
        precondition(!keys.isEmpty, "a verifier ring needs a key")
        var verifiers: [String: JWTCodec] = [:]
        for key in keys { verifiers[key.thumbprint] = try await JWTCodec(verifying: key) }
        self.verifiers = verifiers
        current = verifiers[keys[0].thumbprint]!
    }

    /// `JWTCodec.verify`, with the key the token's header names.
    public func verify<P: JWTPayload>(_ token: String, as type: P.Type, typ: String, error code: ATHError.Code) async throws -> P {
        let header = try JWTCodec.header(of: token, error: code)
        guard let verifier = header.kid.map({ verifiers[$0] }) ?? current else {
            throw ATHError(code, "token was signed with a key this server does not hold")
        }
        return try await verifier.verify(token, header: header, as: type, typ: typ, error: code)
    }
}
