import ATHCore
import ATHStore
import Foundation

/// Users who sign in with an external OpenID Connect provider. The OIDC subject is linked to an
/// account as the external id `OpenIDConnect.externalID(issuer:subject:)`; nobody is created
/// on the fly. OIDC authenticates the person; what they approve in step 7 is still signed with a
/// key, which the console enrolls right after an OIDC sign-in.
extension ATHService {
    /// `Authorization: OIDC <id token>` on the user API.
    public static let oidcScheme = "OIDC"
    static let oidcTicketPrefix = "oidc."
    static let oidcLoginSeconds: Int64 = 600

    /// The console's first leg: where to send the browser, and the sealed login state to keep
    /// in a cookie for the callback (state, nonce and PKCE verifier never leave the server
    /// unsealed, and the cookie binds the callback to the browser that started it).
    public func oidcStart() async throws -> (redirect: String, cookie: String) {
        let openID = try requireOpenID()
        let state = Nonce.generate()
        let nonce = Nonce.generate()
        let verifier = Nonce.generate() + Nonce.generate()
        let cookie = try sealer.token(
            ["state": .string(state), "nonce": .string(nonce), "verifier": .string(verifier)], for: "ath oidc login",
            expiresAt: Freshness.unix(clock()) + Self.oidcLoginSeconds)
        return (try await openID.authorizationURL(state: state, nonce: nonce, codeVerifier: verifier), cookie)
    }

    /// The provider sent the browser back: checks the state against the cookie (once), exchanges
    /// the code, verifies the ID token and returns a one-time console enrollment ticket for the
    /// account linked to the subject.
    public func oidcCallback(code: String, state: String, cookie: String) async throws -> String {
        let now = clock()
        let failed = ATHError(.userAuthenticationFailed, "this sign-in is not the one this browser started, or it expired; start again")
        let openID = try requireOpenID()
        guard let fields = sealer.openToken(cookie, for: "ath oidc login", now: Freshness.unix(now)),
            let expected = fields["state"]?.stringValue, let nonce = fields["nonce"]?.stringValue,
            let verifier = fields["verifier"]?.stringValue, case .integer(let expiry)? = fields["exp"], ConstantTime.equal(state, expected)
        else { throw failed }
        guard try await store.consumeNonce("oidc-login:\(expected)", expiresAt: expiry, now: Freshness.unix(now)) else { throw failed }
        do {
            let claims = try await openID.login(code: code, codeVerifier: verifier, nonce: nonce)
            let account = try await linkedAccount(claims)
            let ticket = try sealer.token(
                ["did": .string(account.did), "nonce": .string(Nonce.generate())], for: "ath oidc enrollment",
                expiresAt: Freshness.unix(now) + Self.challengeSeconds)
            try await audit("console.oidc_login", actor: account.did, subject: claims.sub, outcome: "ok", detail: "iss=\(claims.iss)", at: now)
            return Self.oidcTicketPrefix + ticket
        } catch let error as ATHError {
            refusals.record(
                AuditEvent(at: Freshness.unix(now), event: "console.oidc_login", actor: "-", subject: "-", outcome: error.code.rawValue, detail: error.message))
            throw error
        }
    }

    /// A fresh nonce for a user-API client to put in its authorization request: sealed by this
    /// server, 10 minutes, and accepted once in an ID token.
    public func oidcNonce() throws -> String {
        _ = try requireOpenID()
        return try sealer.token(["n": .string(Nonce.generate())], for: "ath oidc api nonce", expiresAt: Freshness.unix(clock()) + Self.oidcLoginSeconds)
    }

    func requireOpenID() throws -> OpenIDProvider {
        guard let openID else { throw ATHError(.userAuthenticationFailed, "this server has no OpenID provider configured") }
        return openID
    }

    func authenticateOpenIDUser(idToken: String, now: Date) async throws -> DID {
        do {
            let openID = try requireOpenID()
            // The nonce must be one this server issued; read it unverified only to know what to expect.
            let unverified = try? JWTCodec.unverifiedClaims(of: idToken, as: IDTokenClaims.self, error: .userAuthenticationFailed)
            guard let nonce = unverified?.nonce, let fields = sealer.openToken(nonce, for: "ath oidc api nonce", now: Freshness.unix(now)),
                case .integer(let expiry)? = fields["exp"]
            else {
                throw ATHError(.userAuthenticationFailed, "ID token refused: its nonce was not issued by this server (GET /ath/oidc/nonce) or expired")
            }
            let claims = try await openID.verify(idToken: idToken, nonce: nonce)
            guard try await store.consumeNonce("oidc-api:\(nonce)", expiresAt: expiry, now: Freshness.unix(now)) else {
                throw ATHError(.userAuthenticationFailed, "ID token refused: its nonce was already used")
            }
            return try DID(try await linkedAccount(claims).did)
        } catch let error as ATHError {
            refusals.record(
                AuditEvent(at: Freshness.unix(now), event: "user.authenticate", actor: "-", subject: "-", outcome: error.code.rawValue, detail: error.message))
            throw error
        }
    }

    func linkedAccount(_ claims: IDTokenClaims) async throws -> Account {
        let id = OpenIDConnect.externalID(issuer: claims.iss, subject: claims.sub)
        guard let account = try await store.account(did: id) else {
            throw ATHError(.userAuthenticationFailed, "no account is linked to this OpenID subject (external id \(id))")
        }
        guard account.kind == .user else { throw ATHError(.userAuthenticationFailed, "the linked account is not a user") }
        if account.suspendedAt != nil { throw ATHError(.accountSuspended, "this account is suspended") }
        return account
    }

    func openOIDCEnrollment(_ token: String, now: Date) async throws -> DID {
        let failed = ATHError(.userAuthenticationFailed, "the sign-in ticket is invalid, used or expired; sign in again")
        guard let fields = sealer.openToken(String(token.dropFirst(Self.oidcTicketPrefix.count)), for: "ath oidc enrollment", now: Freshness.unix(now)),
            let did = fields["did"]?.stringValue, let nonce = fields["nonce"]?.stringValue, case .integer(let expiry)? = fields["exp"],
            let user = try? DID(did)
        else { throw failed }
        guard try await store.consumeNonce("oidc-enroll:\(nonce)", expiresAt: expiry, now: Freshness.unix(now)) else { throw failed }
        return user
    }
}
