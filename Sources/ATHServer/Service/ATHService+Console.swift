import ATHCore
import ATHStore
import Crypto
import Foundation

/// The consent console's server side, without HTTP: enrolling a browser's key, signing in with
/// it, and what a signed-in user may see and do. `ConsoleRoutes` is its web binding.
extension ATHService {
    /// A signed-in browser: which user, with which enrolled key, until when, and the token its
    /// requests that change something must repeat (CSRF). Kept in the browser's cookie, sealed
    /// with the server's key, so any instance sharing the key accepts it.
    public struct ConsoleSession: Codable, Sendable, Equatable {
        public var did: String
        public var kid: String
        public var exp: Int64
        public var csrf: String
    }

    public static let consoleSessionSeconds: Int64 = 1800
    static let challengeSeconds: Int64 = 120

    /// Adds the browser's public key (SPKI DER, P-256) to the account of the user who signed
    /// `token` (an enrollment token, single use). Returns the user and the key's kid.
    public func enrollConsoleKey(token: String, publicKeySPKI: Data) async throws -> (DID, String) {
        let now = clock()
        let user =
            token.hasPrefix(Self.oidcTicketPrefix)
            ? try await openOIDCEnrollment(token, now: now) : try await verifyUserToken(token, typ: ConsoleLogin.enrollmentTyp, now: now)
        guard let p256 = try? P256.Signing.PublicKey(derRepresentation: publicKeySPKI) else {
            throw ATHError(.malformedMessage, "public_key must be a P-256 key in SPKI DER (base64url)")
        }
        let key = PublicKey.p256(p256)
        let record = AuditEvent(
            at: Freshness.unix(now), event: "console.enroll", actor: user.value, subject: user.value, outcome: "ok", detail: "kid=\(key.thumbprint)")
        do {
            try await store.addKey(did: user.value, key: key, audit: [record])
        } catch StoreError.notFound {
            throw ATHError(.accountNotFound, "the console needs a registered account; \(user) has none")
        } catch StoreError.duplicate {
            // Enrolling the same key twice changes nothing; the enrollment is still recorded.
            try await store.appendAudit([record])
        }
        return (user, key.thumbprint)
    }

    /// A challenge for `did` to sign: sealed (so nobody can make one), short-lived, single use.
    public func consoleChallenge(for did: String) throws -> String {
        guard (1...256).contains(did.utf8.count) else { throw ATHError(.malformedMessage, "bad did") }
        return try sealer.token(
            ["did": .string(did), "nonce": .string(Nonce.generate())], for: "ath console challenge",
            expiresAt: Freshness.unix(clock()) + Self.challengeSeconds)
    }

    /// Checks the signature over the challenge with the user's enrolled key `kid`; returns the
    /// session and its cookie value.
    public func consoleLogin(did: String, kid: String, challenge: String, signature: String) async throws -> (ConsoleSession, String) {
        let now = clock()
        let failed = ATHError(.userAuthenticationFailed, "sign-in failed: unknown user or key, bad signature, or a stale challenge")
        guard let user = try? DID(did), let fields = sealer.openToken(challenge, for: "ath console challenge", now: Freshness.unix(now)),
            fields["did"]?.stringValue == did, case .integer(let expiry)? = fields["exp"], let nonce = fields["nonce"]?.stringValue
        else { throw failed }
        guard let key = try await store.activeKeys(did: did).first(where: { $0.thumbprint == kid }),
            let raw = Base64URL.decode(signature),
            key.isValidSignature(raw, for: try ConsoleLogin.signingInput(server: identity.did, user: user, challenge: challenge))
        else {
            refusals.record(AuditEvent(at: Freshness.unix(now), event: "console.login", actor: String(did.prefix(256)), subject: "-", outcome: failed.code.rawValue))
            throw failed
        }
        guard try await store.consumeNonce("console-challenge:\(nonce)", expiresAt: expiry, now: Freshness.unix(now)) else {
            throw failed
        }
        if try await store.isSuspended(did: did) { throw ATHError(.accountSuspended, "this account is suspended") }
        let session = ConsoleSession(did: did, kid: kid, exp: Freshness.unix(now) + Self.consoleSessionSeconds, csrf: Nonce.generate())
        try await audit("console.login", actor: did, subject: did, outcome: "ok", detail: "kid=\(kid)", at: now)
        return (session, Base64URL.encode(try sealer.seal(bytes: try CanonicalJSON.bytes(of: session), for: "ath console session")))
    }

    /// The session a cookie holds, if it is ours, unexpired, and its key still active (revoking
    /// the browser's key signs it out everywhere).
    public func consoleSession(cookie: String) async throws -> ConsoleSession {
        let now = Freshness.unix(clock())
        guard let sealed = Base64URL.decode(cookie), let opened = sealer.openBytes(sealed, for: "ath console session"),
            let session = try? JSONValue.parse(opened).decode(ConsoleSession.self), session.exp > now,
            try await store.activeKeys(did: session.did).contains(where: { $0.thumbprint == session.kid }),
            try await !store.isSuspended(did: session.did),
            try await !store.isNonceRecorded(Self.signedOutKey(session), now: now)
        else { throw ATHError(.userAuthenticationFailed, "sign in to the console first") }
        return session
    }

    /// Ends a console session before its cookie expires: the cookie is sealed, so the browser
    /// deleting it is not enough (a copy would still work); the session's CSRF token, random
    /// per sign-in, names it in the store's list of single-use values until it would expire.
    public func consoleLogout(_ session: ConsoleSession) async throws {
        let now = Freshness.unix(clock())
        _ = try await store.consumeNonce(
            Self.signedOutKey(session), expiresAt: session.exp, now: now,
            audit: [AuditEvent(at: now, event: "console.logout", actor: session.did, subject: session.did, outcome: "ok", detail: "kid=\(session.kid)")])
    }

    static func signedOutKey(_ session: ConsoleSession) -> String { "console-signed-out:\(session.csrf)" }

    /// What the console shows for a pending request: the step-6 message and each scope in words.
    public struct ConsoleRequest: Codable, Sendable {
        public var request: AuthorizationConfirmationRequest
        public var scope_descriptions: [String: String]
    }

    public func consolePending(_ session: ConsoleSession) async throws -> [ConsoleRequest] {
        try await store.pendingConfirmations(userDID: session.did, now: Freshness.unix(clock())).compactMap(\.confirmation).map {
            ConsoleRequest(request: $0, scope_descriptions: describe($0.requested_scopes))
        }
    }

    /// A grant as the console lists it.
    public struct ConsoleGrant: Codable, Sendable {
        public var grant_id: String
        public var client_did: String
        public var client_name: String
        public var scopes: [String]
        public var scope_descriptions: [String: String]
        public var created_at: Int64
        public var expires_at: Int64
    }

    public func consoleGrants(_ session: ConsoleSession) async throws -> [ConsoleGrant] {
        var out: [ConsoleGrant] = []
        for grant in try await store.activeGrants(did: session.did, now: Freshness.unix(clock())) where grant.userDID.value == session.did {
            let name = try await store.account(did: grant.clientDID.value)?.name ?? grant.clientDID.value
            out.append(
                ConsoleGrant(
                    grant_id: grant.id, client_did: grant.clientDID.value, client_name: name, scopes: grant.scopes,
                    scope_descriptions: describe(grant.scopes), created_at: grant.createdAt, expires_at: grant.expiresAt))
        }
        return out
    }

    /// Revokes one of the signed-in user's own grants; someone else's is "not found".
    public func consoleRevokeGrant(_ id: String, session: ConsoleSession) async throws {
        guard let grant = try await store.grant(id: id), grant.userDID.value == session.did else {
            throw ATHError(.notFound, "no grant \(id.prefix(64)) of yours")
        }
        try await revokeGrant(id, by: session.did)
    }

    func describe(_ scopes: [String]) -> [String: String] {
        Dictionary(uniqueKeysWithValues: scopes.map { ($0, policy.scopeDescriptions[$0] ?? $0) })
    }
}
