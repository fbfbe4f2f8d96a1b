import Foundation
import JWTKit

/// A short-lived JWT by which a user's device authenticates to the server's user API (listing
/// its pending confirmations): `Authorization: ATH-User <jwt>`.
///
/// Header `typ` "ath-user-request+jwt", `kid` the key's thumbprint. Claims: `iss` the user's DID,
/// `aud` the server's DID, `iat`, `exp` (at most 300 s later), `jti` (single use).
public struct UserRequestClaims: JWTPayload, Equatable {
    public var iss: String
    public var aud: String
    public var iat: Int64
    public var exp: Int64
    public var jti: String

    public init(iss: String, aud: String, iat: Int64, exp: Int64, jti: String) {
        (self.iss, self.aud, self.iat, self.exp, self.jti) = (iss, aud, iat, exp, jti)
    }

    public func verify(using algorithm: some JWTAlgorithm) async throws {}
}

public enum UserRequestToken {
    public static let typ = "ath-user-request+jwt"
    public static let scheme = "ATH-User"
    public static let maxLifetime: Int64 = 300

    /// `typ` names what the token is for: the user API (the default) or enrolling a browser key
    /// (`ConsoleLogin.enrollmentTyp`), so that a token made for one cannot be used for the other.
    public static func make(user: DID, key: PrivateKey, server: DID, now: Date, typ: String = typ) async throws -> String {
        let t = Freshness.unix(now)
        return try await JWTCodec(key: key).sign(
            UserRequestClaims(iss: user.value, aud: server.value, iat: t, exp: t + maxLifetime, jti: Nonce.generate()), typ: typ)
    }

    /// Verifies with `key` for `server` at `now`; the caller checks the jti is new.
    public static func verify(_ token: String, key: PublicKey, server: DID, now: Date, typ: String = typ) async throws -> UserRequestClaims {
        let claims = try await JWTCodec(verifying: key).verify(
            token, as: UserRequestClaims.self, typ: typ, error: .userAuthenticationFailed)
        let t = Freshness.unix(now)
        guard claims.aud == server.value else { throw ATHError(.userAuthenticationFailed, "user request is for another server") }
        guard claims.exp > t, claims.iat <= t + Freshness.maxSkew,
            let lifetime = Freshness.lifetime(issuedAt: claims.iat, expiresAt: claims.exp), lifetime <= maxLifetime
        else {
            throw ATHError(.userAuthenticationFailed, "user request token is expired or too long-lived")
        }
        return claims
    }
}
