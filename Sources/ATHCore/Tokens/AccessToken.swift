import Foundation
import JWTKit

/// The access token of step 9: a JWT the server signs, bound to a grant and to the session
/// whose key must prove possession on every request.
///
/// Header `typ` "ath-access+jwt". Claims: `iss` and `aud` the server's DID, `sub` the user's
/// DID, `client_did`, `scope` (space-separated), `iat`, `exp` (at most 3600 s after `iat`),
/// `jti`, `gid` (grant id) and `sid` (session id, which names the proof-of-possession key).
public struct AccessTokenClaims: JWTPayload, Equatable {
    public var iss: String
    public var aud: String
    public var sub: String
    public var client_did: String
    public var scope: String
    public var iat: Int64
    public var exp: Int64
    public var jti: String
    public var gid: String
    public var sid: String

    public init(
        iss: String, aud: String, sub: String, client_did: String, scope: String, iat: Int64, exp: Int64, jti: String,
        gid: String, sid: String
    ) {
        self.iss = iss
        self.aud = aud
        self.sub = sub
        self.client_did = client_did
        self.scope = scope
        self.iat = iat
        self.exp = exp
        self.jti = jti
        self.gid = gid
        self.sid = sid
    }

    public var scopes: Set<String> { Set(scope.split(separator: " ").map(String.init)) }

    /// Whether `scope` is one of the granted scopes, without building the set (every request asks).
    public func grants(_ scope: String) -> Bool {
        // Runs on every request: a scan for `scope` between spaces, without splitting.
        let (granted, wanted) = (self.scope.utf8, scope.utf8)
        guard !wanted.isEmpty else { return false }
        var start = granted.startIndex
        while start < granted.endIndex {
            let end = granted[start...].firstIndex(of: UInt8(ascii: " ")) ?? granted.endIndex
            if granted[start..<end].elementsEqual(wanted) { return true }
            start = end == granted.endIndex ? end : granted.index(after: end)
        }
        return false
    }

    public func verify(using algorithm: some JWTAlgorithm) async throws {}
}

public enum AccessToken {
    public static let typ = "ath-access+jwt"
    /// Seed 000: an access token lives at most one hour; a longer grant renews it.
    public static let maxLifetime: Int64 = 3600

    /// Checks a verified token's claims against this server and `now`.
    /// The one claim check whose answer changes with time, for a token whose other claims
    /// passed `checkClaims` before.
    public static func checkExpiry(_ claims: AccessTokenClaims, now: Date) throws {
        guard claims.exp > Freshness.unix(now) else { throw ATHError(.tokenExpired, "access token expired; renew it") }
    }

    public static func checkClaims(_ claims: AccessTokenClaims, server: DID, now: Date) throws {
        let t = Freshness.unix(now)
        guard claims.iss == server.value, claims.aud == server.value else {
            throw ATHError(.tokenInvalid, "token was issued for another server")
        }
        try checkExpiry(claims, now: now)
        guard claims.iat <= t + Freshness.maxSkew,
            let lifetime = Freshness.lifetime(issuedAt: claims.iat, expiresAt: claims.exp), lifetime <= maxLifetime
        else {
            throw ATHError(.tokenInvalid, "token lifetime is invalid")
        }
    }
}
