import Crypto
import Foundation
import JWTKit

/// The claims of an OpenID Connect ID token that ATH relies on (OIDC Core §2).
public struct IDTokenClaims: JWTPayload, Sendable, Equatable {
    public var iss: String
    public var sub: String
    public var aud: AudienceClaim
    public var exp: Int64
    public var iat: Int64
    public var nonce: String?
    public var azp: String?

    /// Claims are checked by `OpenIDConnect.verify`, against what the relying party expects.
    public func verify(using algorithm: some JWTAlgorithm) throws {}
}

/// ID token verification (OIDC Core §3.1.3.7), without I/O: the provider's keys and what the
/// relying party expects come in, the subject comes out or a refusal naming the failed check.
/// Fetching the discovery document and the JWKS is the adapter's (`OpenIDProvider`).
public enum OpenIDConnect {
    /// What an ID token must show to be accepted.
    public struct Expectations: Sendable {
        public var issuer: String
        public var clientID: String
        /// The nonce this relying party sent, which the token must carry.
        public var nonce: String
        public var now: Date
        /// Clock skew tolerated on exp and iat.
        public var leeway: TimeInterval = 60
        /// How old (by iat) a token may be: a login is used at once.
        public var maxAge: TimeInterval = 600

        public init(issuer: String, clientID: String, nonce: String, now: Date) {
            self.issuer = issuer
            self.clientID = clientID
            self.nonce = nonce
            self.now = now
        }
    }

    /// Asymmetric algorithms only: `none` and HMAC (keyed with the client secret) are refused.
    public static let algorithms: Set<String> = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]

    /// The subject's stable external id on an account: the pair (iss, sub) is unique, sub alone
    /// is not, and an external id is at most 256 base64url characters (Act Auth 4.1.3).
    public static func externalID(issuer: String, subject: String) -> String {
        "oidc_" + Base64URL.encode(Data(SHA256.hash(data: Data((issuer + "\n" + subject).utf8))))
    }

    public static func verify(_ token: String, keys: JWKS, expect: Expectations) async throws -> IDTokenClaims {
        guard let claims = try await signedClaims(token, keys: keys) else {
            throw refuse("the signature does not verify with the provider's keys")
        }
        return try check(claims, expect: expect)
    }

    static func refuse(_ why: String) -> ATHError { ATHError(.userAuthenticationFailed, "ID token refused: \(why)") }

    /// The claims if one of `keys` (the one named by `kid`, or any when there is none) signed
    /// the token; nil when none did, which may mean the provider rotated its keys.
    public static func signedClaims(_ token: String, keys: JWKS) async throws -> IDTokenClaims? {
        let header = try JWTCodec.header(of: token, error: .userAuthenticationFailed)
        guard let alg = header.alg, algorithms.contains(alg) else {
            throw refuse("algorithm '\(header.alg ?? "none")' is not an accepted signature algorithm")
        }
        let candidates = header.kid.map { kid in keys.keys.filter { $0.keyIdentifier?.string == kid } } ?? keys.keys
        for jwk in candidates {
            guard let collection = try? await JWTKeyCollection().add(jwk: jwk, isDefault: true) else { continue }
            if let claims = try? await collection.verify(token, as: IDTokenClaims.self) { return claims }
        }
        return nil
    }

    /// The checks on a signed token's claims, each refusal naming the one that failed.
    public static func check(_ claims: IDTokenClaims, expect: Expectations) throws -> IDTokenClaims {
        guard claims.iss == expect.issuer else { throw refuse("issuer '\(claims.iss)' is not '\(expect.issuer)'") }
        guard claims.aud.value.contains(expect.clientID) else { throw refuse("audience does not include this client") }
        if claims.aud.value.count > 1, let azp = claims.azp, azp != expect.clientID {
            throw refuse("authorized party '\(azp)' is not this client")
        }
        let now = expect.now.timeIntervalSince1970
        guard TimeInterval(claims.exp) > now - expect.leeway else { throw refuse("expired at \(claims.exp)") }
        guard TimeInterval(claims.iat) <= now + expect.leeway else { throw refuse("issued in the future (iat \(claims.iat))") }
        guard TimeInterval(claims.iat) >= now - expect.maxAge else { throw refuse("issued too long ago (iat \(claims.iat))") }
        guard let nonce = claims.nonce, ConstantTime.equal(nonce, expect.nonce) else {
            throw refuse("nonce missing or not the one this login sent")
        }
        guard !claims.sub.isEmpty, claims.sub.utf8.count <= 255 else { throw refuse("subject missing or longer than 255 characters") }
        return claims
    }
}
