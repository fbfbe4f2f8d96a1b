import ATHCore
import ATHStore
import Crypto
import Foundation
import NIOCore

/// The check of every protected request: token, proof of possession, revocation, scope and
/// restrictions, in that order, failing closed at the first refusal.
extension ATHService {
    public struct RequestFacts: Sendable {
        public var method: String
        public var target: String
        public var authorization: String?
        public var proof: String?
        public var body: [UInt8]
        /// The peer's address as text; from a socket address it is written out only when asked
        /// (an ip_whitelist, a refusal's audit record), not on every request.
        public var remoteAddress: String? {
            get { address ?? socket?.ipAddress }
            set { (address, socket) = (newValue, nil) }
        }
        private var address: String?
        private var socket: SocketAddress?

        public init(method: String, target: String, authorization: String?, proof: String?, body: [UInt8], remoteAddress: String?) {
            self.method = method
            self.target = target
            self.authorization = authorization
            self.proof = proof
            self.body = body
            self.address = remoteAddress
        }

        init(method: String, target: String, authorization: String?, proof: String?, body: [UInt8], remoteSocket: SocketAddress?) {
            self.init(method: method, target: target, authorization: authorization, proof: proof, body: body, remoteAddress: nil)
            self.socket = remoteSocket
        }
    }

    /// Protected routes' bodies, hashed for the proof: larger ones are refused (per route:
    /// `ATHAccessMiddleware(bodyLimit:)`).
    public static let defaultBodyLimit = 64 * 1024

    /// Admits a request needing `scope` (nil: any valid access, as token renewal needs).
    public func authorize(_ facts: RequestFacts, scope: String?) async throws -> VerifiedAccess {
        let now = clock()
        do {
            return try await decide(facts, try await knownAccess(authorization: facts.authorization, now: now), scope: scope, now: now)
        } catch let error as ATHError {
            recordRefusal(error, method: facts.method, target: facts.target, remoteAddress: facts.remoteAddress, now: now)
            throw error
        }
    }

    /// The part of the check that needs only the Authorization value: the token verified and its
    /// session known. An HTTP request's body is read after it.
    func knownAccess(authorization: String?, now: Date) async throws -> Known {
        guard let authorization, authorization.hasPrefix("Bearer ") else {
            throw ATHError(.tokenMissing, "Authorization: Bearer <access token> is required")
        }
        if let cached = try remembered(authorization: authorization, now: now) { return cached }
        return try await load(authorization: authorization, now: now)
    }

    /// Every refused request is audited (in batches, see `RefusalAudit`).
    func recordRefusal(_ error: ATHError, method: String, target: String, remoteAddress: String?, now: Date) {
        refusals.record(
            AuditEvent(
                at: Freshness.unix(now), event: "access.refused", actor: remoteAddress ?? "-",
                subject: "\(method) \(target.prefix(512))", outcome: error.code.rawValue, detail: error.message))
    }

    /// What the decision needs beyond the request itself: the verified token, its session's
    /// state and whether the token is revoked. Each is remembered once loaded.
    struct Known {
        var token: VerifiedToken
        var state: SessionState
        var revoked: Bool
    }

    /// What is remembered, without waiting on anything; nil when something must be loaded.
    /// The common path (the same token again) is this lookup and `decide`: no async call.
    func remembered(authorization: String, now: Date) throws -> Known? {
        guard let token = try cachedToken(authorization: authorization, now: now),
            let state = cachedSessionState(token.claims, now: now),
            let revoked = state.knownRevocation(of: token.claims.jti)
        else { return nil }
        return Known(token: token, state: state, revoked: revoked)
    }

    /// Loads (and remembers) what `remembered` lacked: the token's signature is checked, the
    /// session and the token's standing are read from the store.
    func load(authorization: String, now: Date) async throws -> Known {
        let token = try await verifyToken(authorization: authorization, now: now)
        let state = try await sessionState(token.claims, now: now)
        return Known(token: token, state: state, revoked: try await loadRevocation(state, claims: token.claims))
    }

    /// The decision, in the documented order: proof of possession (MAC, time, not replayed),
    /// then the token's standing, scope and restrictions. What was loaded beforehand only
    /// decides in its turn, so a request without a valid proof learns nothing of the token.
    func decide(_ facts: RequestFacts, _ known: Known, scope: String?, now: Date) async throws -> VerifiedAccess {
        let claims = known.token.claims
        guard let proofHeader = facts.proof else {
            throw ATHError(.proofMissing, "\(PossessionProof.header) is required with an ATH access token")
        }
        let proof = try PossessionProof(headerValue: proofHeader)
        try proof.verify(
            keyedMAC: known.state.proofMAC, method: facts.method, target: facts.target, body: facts.body, tokenDigest: known.token.digest,
            now: now)
        guard proof.timestamp >= startedAt else {
            throw ATHError(.proofInvalid, "this ATH-Proof is dated before the server started; make a new one")
        }
        let expiresAt = proof.timestamp + Freshness.maxSkew
        guard proofNonces.insert(scope: claims.sid, nonce: proof.nonce, expiresAt: expiresAt, now: Freshness.unix(now))
        else { throw ATHError(.proofReplayed, "this ATH-Proof was already used") }
        // Seen here first; with several instances, the shared record decides (a replay of a
        // proof another instance admitted is refused the same way).
        if let shared = sharedProofNonces, try await !shared.admit(session: claims.sid, nonce: proof.nonce, expiresAt: expiresAt) {
            throw ATHError(.proofReplayed, "this ATH-Proof was already used")
        }
        try await checkGrant(known.state, claims: claims, revoked: known.revoked, scope: scope, remoteAddress: facts.remoteAddress, now: now)
        return VerifiedAccess(claims: known.token.sharedClaims, grant: known.state.sharedGrant)
    }

    /// What every use of a grant passes, an HTTP request or an RPC call over the encrypted
    /// session alike: token and grant not revoked, grant not ended, scope, restrictions, rate.
    func checkGrant(
        _ state: SessionState, claims: AccessTokenClaims, revoked: Bool, scope: String?, remoteAddress: @autoclosure () -> String?,
        now: Date
    ) async throws {
        try checkStanding(state, revoked: revoked, now: now)
        if let scope, !claims.grants(scope) {
            throw ATHError(.scopeInsufficient, "this request needs scope '\(scope)', which was not granted")
        }
        try state.restrictions.checkRequest(from: remoteAddress(), at: now)
        if let rate = state.restrictions.rateLimit {
            try await limiter.admit(state.grant.id, limit: rate, now: now)
        }
    }

    /// Whether the token (`revoked`: as the store or this instance knows it) and its grant
    /// still stand: not revoked, grant not ended.
    func checkStanding(_ state: SessionState, revoked: Bool, now: Date) throws {
        guard !revoked, !state.grant.revoked else {
            throw ATHError(.tokenRevoked, "this access token or its grant was revoked")
        }
        guard state.grant.expiresAt > Freshness.unix(now) else { throw ATHError(.grantExpired, "the grant expired; run a new handshake") }
    }

    /// Whether the token is revoked, as the store says (an unknown token counts as revoked);
    /// remembered with the session's state until it is read again.
    func loadRevocation(_ state: SessionState, claims: AccessTokenClaims) async throws -> Bool {
        if let known = state.knownRevocation(of: claims.jti) { return known }
        let stored = try await store.token(jti: claims.jti)
        let revoked = stored?.revokedAt != nil || stored == nil
        return state.remember(claims.jti, revoked: revoked)
    }

    /// The standing part of the access check alone, for a session between its calls: throws
    /// `TOKEN_REVOKED` or `GRANT_EXPIRED` once the session must end. Consumes no rate.
    public func checkStanding(_ access: VerifiedAccess) async throws {
        let now = clock()
        let state = try await sessionState(access.claims, now: now)
        try checkStanding(state, revoked: try await loadRevocation(state, claims: access.claims), now: now)
    }

    /// The checks of `checkGrant` for one RPC call under an access admitted earlier (when the
    /// session was opened): a revocation or the grant's end stops the next call.
    public func authorizeCall(_ access: VerifiedAccess, scope: String, remoteAddress: String?) async throws -> VerifiedAccess {
        let now = clock()
        let state = try await sessionState(access.claims, now: now)
        let revoked = try await loadRevocation(state, claims: access.claims)
        try await checkGrant(state, claims: access.claims, revoked: revoked, scope: scope, remoteAddress: remoteAddress, now: now)
        return VerifiedAccess(claims: access.sharedClaims, grant: state.sharedGrant)
    }

    /// Signature and claims; a verified token is remembered until it expires, so the signature
    /// check runs once per token, not once per request.
    func verifyToken(authorization: String, now: Date) async throws -> VerifiedToken {
        if let cached = try cachedToken(authorization: authorization, now: now) { return cached }
        let token = String(authorization.dropFirst("Bearer ".count))
        let claims = try await tokenVerifier.verify(token, as: AccessTokenClaims.self, typ: AccessToken.typ, error: .tokenInvalid)
        try AccessToken.checkClaims(claims, server: identity.did, now: now)
        let verified = VerifiedToken(claims: claims.sharingServer(identity.did), digest: PossessionProof.tokenDigest(token))
        verifiedTokens.set(verified, forKey: TokenKey(authorization))
        return verified
    }

    /// The remembered token, its expiry checked against `now` again (its other claims do not
    /// change with time); nil if not remembered.
    func cachedToken(authorization: String, now: Date) throws -> VerifiedToken? {
        guard let cached = verifiedTokens.value(forKey: TokenKey(authorization)), cached.isToken(of: authorization) else { return nil }
        try AccessToken.checkExpiry(cached.claims, now: now)
        return cached
    }

    /// Where a verified token is filed: the last 32 bytes of the Authorization value, which lie
    /// in the token's signature. Hashing the whole value (some 700 bytes) on every request cost
    /// more than the rest of the lookup. The key only finds a candidate: a hit counts only
    /// if the whole value is the same, so tokens sharing a tail, by chance or by design, are
    /// never taken for one another.
    struct TokenKey: Hashable {
        var length: Int
        var tail: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

        init(_ authorization: String) {
            var authorization = authorization
            length = authorization.utf8.count
            authorization.withUTF8 { utf8 in
                withUnsafeMutableBytes(of: &tail) { $0.copyMemory(from: UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: utf8.suffix(32)))) }
            }
        }

        static func == (a: TokenKey, b: TokenKey) -> Bool { a.length == b.length && a.tail == b.tail }

        func hash(into hasher: inout Hasher) {
            hasher.combine(length)
            hasher.combine(tail.0)
            hasher.combine(tail.1)
            hasher.combine(tail.2)
            hasher.combine(tail.3)
        }
    }

    /// A token whose signature was checked, with the digest every proof for it carries (a
    /// class for the same reason as `SessionState`).
    final class VerifiedToken: Sendable {
        let sharedClaims: Shared<AccessTokenClaims>
        var claims: AccessTokenClaims { sharedClaims.value }
        let digest: String

        init(claims: AccessTokenClaims, digest: String) {
            self.sharedClaims = Shared(claims)
            self.digest = digest
        }

        /// Whether `authorization` carries the token this one was verified from: the digests
        /// are compared, in time that does not depend on where they differ. Keeping the whole
        /// value (some 700 bytes a live token) cost more memory than a digest per request
        /// costs time (a few microseconds).
        func isToken(of authorization: String) -> Bool {
            var (a, b) = (digest, PossessionProof.tokenDigest(String(authorization.dropFirst("Bearer ".count))))
            return a.withUTF8 { a in b.withUTF8 { b in ConstantTime.equal(a, b) } }
        }
    }

    /// The session's state if read from the store less than `statusCacheSeconds` ago.
    func cachedSessionState(_ claims: AccessTokenClaims, now: Date) -> SessionState? {
        guard let s = sessions.value(forKey: claims.sid), now.timeIntervalSince(s.loadedAt) < Self.statusCacheSeconds else { return nil }
        return s
    }

    func sessionState(_ claims: AccessTokenClaims, now: Date) async throws -> SessionState {
        if let s = cachedSessionState(claims, now: now) { return s }
        guard let session = try await store.session(id: claims.sid), session.grantID == claims.gid,
            let grant = try await store.grant(id: claims.gid)
        else { throw ATHError(.tokenInvalid, "the token's session is unknown") }
        // The grant's restrictions come from this server's own validated policy: one that no
        // longer parses is a server fault, and nothing is admitted under it.
        guard let restrictions = try? CompiledRestrictions(grant.restrictions) else {
            throw ATHError(.internalError, "the grant's stored restrictions are invalid")
        }
        let proofKey = try openSessionKeys(session).proofKey
        let s = SessionState(
            proofMAC: ProofMAC(key: proofKey), grant: grant.sharingTexts(of: claims), restrictions: restrictions, loadedAt: now)
        sessions.set(s, forKey: claims.sid)
        return s
    }

    // MARK: Renewal and revocation

    public struct RenewedToken: Codable, Sendable {
        public var access_token: String
        public var token_expires_at: Int64
    }

    /// A new access token for the same grant and session, without asking the user again; the
    /// old one is revoked.
    public func renew(_ access: VerifiedAccess) async throws -> RenewedToken {
        let now = clock()
        let t = Freshness.unix(now)
        let old = access.claims
        var claims = old
        claims.iat = t
        claims.exp = min(access.grant.expiresAt, t + AccessToken.maxLifetime)
        claims.jti = Nonce.generate()
        guard claims.exp > t else { throw ATHError(.grantExpired, "the grant expired; run a new handshake") }
        let token = try await tokenCodec.sign(claims, typ: AccessToken.typ)
        // Check-and-set: of two renewals of one token (two requests, two instances), one wins.
        let renewed = try await store.renewToken(
            revoking: old.jti,
            with: StoredToken(jti: claims.jti, grantID: claims.gid, sessionID: claims.sid, issuedAt: t, expiresAt: claims.exp), now: t,
            audit: [
                AuditEvent(
                    at: t, event: "token.renew", actor: old.client_did, subject: old.gid, outcome: "ok", detail: "old=\(old.jti) new=\(claims.jti)")
            ])
        sessions.value(forKey: old.sid)?.revoke(old.jti)
        guard renewed else { throw ATHError(.tokenRevoked, "this access token was already renewed or revoked") }
        return RenewedToken(access_token: token, token_expires_at: claims.exp)
    }

    /// Revokes a grant and every token of it; this instance refuses them at once.
    public func revokeGrant(_ id: String, by actor: String) async throws {
        let t = Freshness.unix(clock())
        let found = try await store.revokeGrant(
            id: id, now: t, audit: [AuditEvent(at: t, event: "grant.revoke", actor: actor, subject: id, outcome: "ok")])
        guard found else { throw ATHError(.notFound, "no grant \(id.prefix(64))") }
        forget(grants: [id])
    }

    /// Revokes one access token; its grant stays, but renewal needs a valid token, so the agent
    /// runs a new handshake. This instance refuses the token at once, others within the status cache.
    public func revokeToken(_ jti: String, by actor: String) async throws {
        let t = Freshness.unix(clock())
        guard
            let token = try await store.revokeToken(
                jti: jti, now: t,
                audit: { [AuditEvent(at: t, event: "token.revoke", actor: actor, subject: jti, outcome: "ok", detail: "grant=\($0.grantID)")] })
        else { throw ATHError(.notFound, "no token \(jti.prefix(64))") }
        sessions.value(forKey: token.sessionID)?.revoke(jti)
    }
}
