import Foundation
import JWTKit

/// The user's pre-authorization (step 0): a JWT the user signs and hands to the agent.
///
/// Header: `typ` "ath-user-auth+jwt", `alg` ES256 or EdDSA, `kid` the RFC 7638 thumbprint of
/// the user's key. Claims map onto the ATH fields: `iss` = user_did, `sub` = client_did,
/// `scopes`, `exp` = expires_at; `aud` (optional) restricts it to one server; `jti` names it
/// so that it can be revoked.
public struct UserCredentialClaims: JWTPayload, Equatable {
    public var iss: String
    public var sub: String
    public var aud: String?
    public var scopes: [String]
    public var iat: Int64
    public var exp: Int64
    public var jti: String

    public init(iss: String, sub: String, aud: String?, scopes: [String], iat: Int64, exp: Int64, jti: String) {
        self.iss = iss
        self.sub = sub
        self.aud = aud
        self.scopes = scopes
        self.iat = iat
        self.exp = exp
        self.jti = jti
    }

    public func verify(using algorithm: some JWTAlgorithm) async throws {}
}

public enum UserCredential {
    public static let typ = "ath-user-auth+jwt"

    /// The longest a credential may be issued for: ten years.
    public static let maxValidity = 10 * 366 * 86_400

    /// Issues a pre-authorization (what `ath user authorize` does).
    public static func issue(
        user: DID, key: PrivateKey, client: DID, scopes: [String], validFor seconds: Int, audience: DID? = nil,
        now: Date = Date(), jti: String = Nonce.generate()
    ) async throws -> String {
        // A lifetime the claims can hold (and that `exp` can be computed from without overflow).
        guard (1...Self.maxValidity).contains(seconds) else {
            throw ATHError(.malformedMessage, "a credential is valid for 1 s to \(Self.maxValidity / 86_400) days, not \(seconds) s")
        }
        let iat = Int64(now.timeIntervalSince1970)
        let claims = UserCredentialClaims(
            iss: user.value, sub: client.value, aud: audience?.value, scopes: scopes, iat: iat, exp: iat + Int64(seconds),
            jti: jti)
        return try await JWTCodec(key: key).sign(claims, typ: typ)
    }

    /// A credential read but not verified: who claims to have issued it, with which key.
    public struct Unverified: Sendable {
        public let token: String
        public let header: JOSEHeader
        public let user: DID
    }

    /// Reads the header and `iss` with the protocol's own JSON parser (jwt-kit's decoded the
    /// whole token through Foundation for one field); the rest is checked by `verify`.
    public static func read(_ credential: String) throws -> Unverified {
        let header: JOSEHeader, claims: JSONValue
        do {
            (header, claims) = try JWTCodec.unverifiedParts(of: credential, error: .invalidUserCredential)
        } catch var e as ATHError {
            e.step = 5
            throw e
        }
        guard let iss = claims["iss"]?.stringValue, let user = try? DID(iss) else {
            throw ATHError(.invalidUserCredential, "credential issuer is not a DID", step: 5)
        }
        return Unverified(token: credential, header: header, user: user)
    }

    /// Verifies a credential for one client and one server at `now`.
    public static func verify(
        _ credential: String, userKey: PublicKey, client: DID, server: DID, now: Date
    ) async throws -> UserCredentialClaims {
        try await verify(read(credential), verifier: try await JWTCodec(verifying: userKey), client: client, server: server, now: now)
    }

    /// The same for a credential already read, with the user key's verifier at hand
    /// (`DIDKeyVerifiers` keeps them).
    public static func verify(
        _ credential: Unverified, verifier: JWTCodec, client: DID, server: DID, now: Date
    ) async throws -> UserCredentialClaims {
        let claims: UserCredentialClaims
        do {
            claims = try await verifier.verify(
                credential.token, header: credential.header, as: UserCredentialClaims.self, typ: typ, error: .invalidUserCredential)
        } catch var e as ATHError {
            e.step = 5
            throw e
        }
        let t = Int64(now.timeIntervalSince1970)
        guard claims.exp > t else { throw ATHError(.userCredentialExpired, "the user's credential expired", step: 5) }
        guard claims.iat <= t + Freshness.maxSkew else {
            throw ATHError(.invalidUserCredential, "the user's credential is issued in the future", step: 5)
        }
        guard claims.sub == client.value else {
            throw ATHError(.credentialClientMismatch, "the user's credential was issued to another client", step: 5)
        }
        if let aud = claims.aud, aud != server.value {
            throw ATHError(.credentialClientMismatch, "the user's credential is for another server", step: 5)
        }
        guard !claims.scopes.isEmpty else {
            throw ATHError(.invalidUserCredential, "the user's credential delegates no scope", step: 5)
        }
        return claims
    }
}
