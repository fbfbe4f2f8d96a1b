import ATHCore
import ATHIdentity
import ATHStore
import Crypto
import Foundation
import Logging
import Synchronization

/// The server side of ATH without HTTP: the handshake steps, the user's confirmation API and the
/// check of every protected request. Routes and middleware are thin wrappers around it.
public final class ATHService: Sendable {
    public let identity: ServerIdentity
    public let policy: ServerPolicy
    public let store: any ATHStore
    let channel: any UserConfirmationChannel
    let tokenCodec: JWTCodec
    /// Verifies access tokens signed under any key of the identity's ring.
    let tokenVerifier: JWTVerifierRing
    /// Users' did:key keys with their thumbprints and credential verifiers.
    let didKeys = DIDKeyVerifiers()
    let clock: @Sendable () -> Date
    /// Grants' `rate_limit`: in this process, or shared by every instance when the store is.
    /// Public so that the v0.1 API on the same store counts through it too (one batcher).
    public let limiter: any RateLimiting
    let proofNonces = ReplayCache()
    /// With a store that several instances share, every admitted proof nonce is also recorded
    /// there (`SharedProofNonceCheck`); nil for a store of one instance.
    let sharedProofNonces: SharedProofNonceCheck?
    /// Seals session secrets before they reach the store; public so that the v0.1 API of the
    /// same server seals with the same ring rather than deriving its own.
    public let sealer: SecretSealer
    /// Carries a handshake from step 2 to step 3 instead of the store (`HandshakeTicket`).
    let tickets: HandshakeTicket
    /// Refusals of unauthenticated input are audited in batches (see `RefusalAudit`).
    public let refusals: RefusalAudit
    /// Agents' certificates (ACPs CAI), when this service takes them; see `AgentCertificatePolicy`.
    public let agentCertificates: AgentCertificatePolicy?
    /// The OpenID Connect provider users may sign in with (console and user API), if any.
    public let openID: OpenIDProvider?
    /// Tokens whose signature was checked, until they expire or go unused for two turns of
    /// 50,000 new ones.
    let verifiedTokens = BoundedCache<TokenKey, VerifiedToken>(capacity: 50_000)
    /// Sessions' state as read from the store. An entry is used for `statusCacheSeconds` and
    /// read again after, so generations turn at that age: what stays is what was used lately.
    let sessions = BoundedCache<String, SessionState>(capacity: 100_000, maxAge: .seconds(statusCacheSeconds))
    /// Sessions whose state this instance holds in memory (for measurements: `ath bench sessions`).
    public var liveSessionCount: Int { sessions.count }
    /// Handshakes as this instance last wrote them, with the revision that write made. A step
    /// reaching this instance reads the stored revision alone and takes this copy when it is the
    /// same, rather than reading and decoding the whole transcript (which also re-hashes it):
    /// another instance's write, or a lost one, changes the revision and the document is read.
    /// Steps follow each other within a round trip, so a minute's generations of a thousand
    /// entries hold every handshake in flight at a thousand handshakes a second; a completed one
    /// leaves at once.
    let writtenHandshakes = BoundedCache<String, StoredHandshake>(capacity: 1_024, maxAge: .seconds(60))
    let logger: Logger
    /// When this instance started (Unix seconds). Proofs of possession dated earlier are refused:
    /// the replay cache is in memory, so a proof used before a restart could otherwise be used
    /// again after it (docs/PROTOCOL.md §6).
    public let startedAt: Int64
    /// Wakes agents waiting on a handshake this instance changed.
    let signals = HandshakeSignals()
    public let retention: Retention
    private let sweeper = Mutex<Task<Void, Never>?>(nil)
    /// Apply what other instances commit (a store shared by several): revocations, so that
    /// this instance drops what it cached of them at once rather than at the cache's expiry, and
    /// handshake changes, so that an agent waiting here is answered at once.
    private let listeners = Mutex<[Task<Void, Never>]>([])

    /// How long what no grant needs is kept, and how often it is looked for.
    public struct Retention: Sendable {
        /// A handshake that ended without a grant (refused, abandoned, timed out) is deleted
        /// this long after its deadline, and a grant this long after it ended (expired or
        /// revoked), with its session, tokens and handshake; their audit records stay.
        public var handshakes: Duration = .seconds(24 * 3600)
        public var sweepInterval: Duration = .seconds(600)
        /// How often an agent's long poll looks at the store for a change made by another
        /// instance (a change made by this one wakes it at once).
        public var pollInterval: Duration = .seconds(5)
        public init() {}
    }

    /// How long a grant/token status read from the store is trusted before it is read again.
    /// Revocation through this instance is seen at once; through another, within this time.
    public static let statusCacheSeconds: Double = 2

    /// What the check needs of a session, read from the store at most every
    /// `statusCacheSeconds`. A class, so that a request takes one reference to it rather than
    /// copying (and retaining) the grant's fields out of the shared cache.
    final class SessionState: Sendable {
        /// The MAC keyed with the session's proof key, copied for each request.
        let proofMAC: ProofMAC
        let sharedGrant: Shared<Grant>
        var grant: Grant { sharedGrant.value }
        let restrictions: CompiledRestrictions
        let loadedAt: Date
        /// Whether each token of the session seen since `loadedAt` is revoked (or unknown): a
        /// session has one token at a time and a few over its life, so a short list (the
        /// oldest dropped past `knownTokens`, to be read again) rather than a dictionary.
        private let tokenRevoked = Mutex<[(jti: String, revoked: Bool)]>([])
        static let knownTokens = 8

        /// Whether token `jti` is revoked, if this state knows (nil: ask the store).
        func knownRevocation(of jti: String) -> Bool? {
            tokenRevoked.withLock { known in known.first { $0.jti == jti }?.revoked }
        }

        /// Records what the store said of token `jti`, unless this state learnt it meanwhile
        /// (a revocation through this instance wins over a read that began before it); the answer.
        func remember(_ jti: String, revoked: Bool) -> Bool {
            tokenRevoked.withLock { known in
                if let answer = known.first(where: { $0.jti == jti })?.revoked { return answer }
                if known.count >= Self.knownTokens { known.removeFirst() }
                known.append((jti, revoked))
                return revoked
            }
        }

        /// Token `jti` is revoked from now on.
        func revoke(_ jti: String) {
            tokenRevoked.withLock { known in
                known.removeAll { $0.jti == jti }
                if known.count >= Self.knownTokens { known.removeFirst() }
                known.append((jti, true))
            }
        }

        init(proofMAC: ProofMAC, grant: Grant, restrictions: CompiledRestrictions, loadedAt: Date) {
            self.proofMAC = proofMAC
            self.sharedGrant = Shared(grant)
            self.restrictions = restrictions
            self.loadedAt = loadedAt
        }
    }

    public init(
        identity: ServerIdentity, policy: ServerPolicy, store: any ATHStore,
        channel: any UserConfirmationChannel = PullConfirmationChannel(), logger: Logger = Logger(label: "ath.server"),
        sealer: SecretSealer? = nil, agentCertificates: AgentCertificatePolicy? = nil, openID: OpenIDProvider? = nil,
        retention: Retention = .init(), clock: @escaping @Sendable () -> Date = { Date() }
    ) async throws {
        self.agentCertificates = agentCertificates
        self.openID = openID
        _ = try policy.restrictions.validated()
        self.identity = identity
        self.policy = policy
        self.store = store
        self.channel = channel
        self.clock = clock
        sharedProofNonces = (store as? any SharedProofNonces).map { SharedProofNonceCheck(store: $0, clock: clock) }
        limiter = (store as? any SharedRateCounters).map { SharedRateLimiter(store: $0) } ?? SlidingWindowLimiter()
        self.logger = logger
        refusals = RefusalAudit(store: store, logger: logger)
        self.sealer = sealer ?? SecretSealer(derivedFrom: identity)
        tickets = HandshakeTicket(derivedFrom: identity)
        tokenCodec = try await JWTCodec(key: identity.tokenKey)
        tokenVerifier = try await JWTVerifierRing(keys: identity.keyRing.map(\.publicKey))
        self.retention = retention
        startedAt = Freshness.unix(clock())
        startSweeping()
        listenForRevocations()
    }

    deinit {
        sweeper.withLock { $0?.cancel() }
        for listener in listeners.withLock({ $0 }) { listener.cancel() }
    }

    private func listenForRevocations() {
        if let feed = store as? any RevocationFeed { listen(to: feed.revocations()) { $0.apply($1) } }
        if let feed = store as? any HandshakeChangeFeed { listen(to: feed.handshakeChanges()) { $0.signals.signal($1) } }
    }

    private func listen<Event: Sendable>(to events: AsyncStream<Event>, _ handle: @escaping @Sendable (ATHService, Event) -> Void) {
        let task = Task { [weak self] in
            for await event in events {
                guard let self else { return }
                handle(self, event)
            }
        }
        listeners.withLock { $0.append(task) }
    }

    /// Drops what this instance cached of a revoked grant or token.
    func apply(_ revocation: Revocation) {
        switch revocation {
        case .grants(let ids): forget(grants: ids)
        case .token(let jti, let session): sessions.value(forKey: session)?.revoke(jti)
        case .issuedToken, .registration: break
        }
    }

    private func startSweeping() {
        let interval = retention.sweepInterval
        let task = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard let self, !Task.isCancelled else { return }
                _ = try? await self.purgeEnded()
            }
        }
        sweeper.withLock { $0 = task }
    }

    /// Deletes what `retention` no longer keeps: handshakes that ended without a grant, and
    /// grants that ended, before the retention period; expired single-use values. Runs every
    /// `sweepInterval`.
    @discardableResult
    public func purgeEnded() async throws -> PurgedRecords {
        let now = Freshness.unix(clock())
        let (seconds, _) = retention.handshakes.components
        let purged = try await store.purge(handshakesEndedBefore: now - seconds, now: now)
        if purged.handshakes + purged.nonces > 0 {
            logger.info(
                "retention: deleted \(purged.handshakes) ended handshakes (\(purged.grants) with their ended grants) and \(purged.nonces) expired single-use values"
            )
        }
        // The v0.1 API's sessions and tokens, where the store keeps them: those expired before
        // the same retention period.
        if let oauth = store as? any OAuthAPIStore {
            let swept = try await oauth.purgeAuthorizations(expiredBefore: now - seconds)
            if swept.sessions + swept.tokens > 0 {
                logger.info("retention: deleted \(swept.sessions) expired authorization sessions and \(swept.tokens) expired tokens")
            }
        }
        return purged
    }

    // MARK: Handshake, steps 1-4

    /// Step 2 and the ticket that carries the handshake to step 3 (`HandshakeTicket`).
    public struct HandshakeStart: Sendable {
        public var response: JSONValue
        public var ticket: String
    }

    /// Step 1 writes nothing: the handshake travels in its ticket until the agent has signed
    /// step 3. `peerAIC`: the AIC of the TLS client certificate this request came with, if any
    /// (see `ATHRequestContextProtocol.peerAgentIdentity`); the handshake is bound to it.
    public func begin(_ raw: JSONValue, peerAIC: AgentIdentityCode? = nil) async throws -> HandshakeStart {
        let now = clock()
        let clientDID = raw["client_did"]?.stringValue ?? "?"
        do {
            var registered: PublicKey?
            if let did = try? DID(clientDID), did.method == .ath {
                registered = try await store.activeKeys(did: did.value).first
            }
            var (handshake, response) = try ServerHandshake.begin(
                request: raw, id: Nonce.generate(), identity: identity, policy: policy, registeredKey: registered, now: now)
            if let peerAIC { try await bind(peerAIC, to: &handshake, step: 1) }
            return HandshakeStart(response: response, ticket: try tickets.make(handshake))
        } catch let error as ATHError {
            refusals.record(
                AuditEvent(
                    at: Freshness.unix(now), event: "handshake.start", actor: String(clientDID.prefix(256)), subject: "-",
                    outcome: error.code.rawValue, detail: error.message))
            throw error
        }
    }

    /// Step 3 with the ticket of step 2. Without one, the stored handshake: one begun by a
    /// release that stored step 1, or a repeated step 3, which the stored state answers.
    public func identityProof(handshakeID: String, ticket: String?, _ raw: JSONValue) async throws -> JSONValue {
        guard let ticket else {
            return try await step(handshakeID) { stored, copy in try await self.identityProof(stored, raw, copy: copy) }
        }
        let now = clock()
        var h: ServerHandshake
        do {
            h = try tickets.open(ticket, handshakeID: handshakeID)
        } catch let error as ATHError {
            refusals.record(
                AuditEvent(
                    at: Freshness.unix(now), event: "handshake.identity", actor: "-", subject: String(handshakeID.prefix(128)),
                    outcome: error.code.rawValue, detail: error.message))
            throw error
        }
        let start = Self.aicDetail(h)
        let t = Freshness.unix(now)
        // Single use: the step-1 nonce is written with the handshake. It is kept for as long as
        // any ticket made from that step 1 could be brought back: its timestamp passed within
        // the skew, and a ticket lasts the handshake timeout.
        let nonce = "hs1:\(h.clientDID.value):\(h.clientNonce)"
        let nonceExpiresAt = h.createdAt + Int64(policy.handshakeTimeout) + 2 * Freshness.maxSkew
        do {
            let reply = try await proveIdentity(&h, raw, now: now)
            let fresh = try await store.beginHandshake(
                h, nonce: nonce, nonceExpiresAt: nonceExpiresAt, now: t,
                audit: [
                    AuditEvent(at: t, event: "handshake.start", actor: h.clientDID.value, subject: h.id, outcome: "ok", detail: start),
                    AuditEvent(at: t, event: "handshake.identity", actor: h.clientDID.value, subject: h.id, outcome: "ok", detail: Self.aicDetail(h)),
                ])
            guard fresh else { return try await identityProofAfterTicket(handshakeID, raw) }
            writtenHandshakes.set(StoredHandshake(handshake: h, revision: 0), forKey: h.id)
            signals.signal(h.id)
            return reply
        } catch let error as ATHError {
            // A refusal ends the handshake as at any later step: it is stored ended, with its
            // record, so that the same ticket is refused again. An expired ticket (its handshake
            // would be deleted as it is written), a suspended agent and a replayed step 1 write
            // nothing and are audited with the other refusals of unauthenticated input.
            let writesNothing: Set<ATHError.Code> = [.handshakeExpired, .accountSuspended, .nonceReplayed]
            if writesNothing.contains(error.code) {
                refusals.record(
                    AuditEvent(
                        at: t, event: "handshake.identity", actor: String(h.clientDID.value.prefix(256)), subject: h.id,
                        outcome: error.code.rawValue, detail: error.message))
            } else if h.state == .failed {
                _ = try? await store.beginHandshake(
                    h, nonce: nonce, nonceExpiresAt: nonceExpiresAt, now: t,
                    audit: [
                        AuditEvent(
                            at: t, event: "handshake.identity", actor: h.clientDID.value, subject: h.id, outcome: error.code.rawValue,
                            detail: error.message)
                    ])
            }
            throw error
        }
    }

    /// A ticket whose step-1 nonce was written already: its own handshake's step 3 again (the
    /// stored state answers it, as any repeated message), or another handshake made from the
    /// same step 1, which is a replay.
    private func identityProofAfterTicket(_ id: String, _ raw: JSONValue) async throws -> JSONValue {
        guard let stored = try await store.handshake(id: id) else {
            throw ATHError(.nonceReplayed, "this handshake_request nonce was already used", step: 3)
        }
        return try await identityProof(stored, raw, copy: false)
    }

    /// Step 3 on a handshake, from its ticket or the store: the message, then the agent's
    /// certificates. Like any refusal after step 1, a refused certificate ends the handshake.
    private func proveIdentity(_ h: inout ServerHandshake, _ raw: JSONValue, now: Date) async throws -> JSONValue {
        let reply = try h.receiveIdentityProof(raw, policy: policy, now: now, acceptsCredentials: agentCertificates != nil)
        do {
            try await verifyCredentials(raw, handshake: &h, now: now)
        } catch let error as ATHError {
            h.fail(error)
            throw error
        }
        return reply
    }

    /// The audit detail naming the agent's bound certificate, if any.
    private static func aicDetail(_ h: ServerHandshake) -> String { h.clientAIC.map { "aic=\($0)" } ?? "" }

    private func identityProof(_ stored: StoredHandshake, _ raw: JSONValue, copy: Bool) async throws -> JSONValue {
        let now = clock()
        var h = stored.handshake
        do {
            let reply = try await proveIdentity(&h, raw, now: now)
            try await save(h, revision: stored.revision, event: "handshake.identity", outcome: "ok", detail: Self.aicDetail(h), now: now)
            return reply
        } catch let error as ATHError {
            if copy { throw StaleCopy() }
            try await saveFailure(&h, error, from: stored, event: "handshake.identity", now: now)
            throw error
        }
    }

    // MARK: Step 5

    public enum ScopeAnswer: Sendable {
        case pending(ConfirmationPending)
        case complete(HandshakeOutcome)
    }

    public func scopeRequest(handshakeID: String, _ raw: JSONValue) async throws -> ScopeAnswer {
        try await step(handshakeID) { stored, copy in try await self.scopeRequest(stored, raw, copy: copy) }
    }

    private func scopeRequest(_ stored: StoredHandshake, _ raw: JSONValue, copy: Bool) async throws -> ScopeAnswer {
        let now = clock()
        var stored = stored
        var h = stored.handshake
        do {
            let m5 = try h.receiveScopeRequest(raw, policy: policy, now: now)
            do {
                let claims = try await verifyCredential(m5.user_authorization.credential, client: h.clientDID, now: now)
                // The agent's account: its name for the user's confirmation screen, its type for
                // the policy's account types. A service that needs neither does not read it.
                let needsAccount = policy.requireUserConfirmation || !policy.accountTypes.isEmpty
                let client = needsAccount ? try await store.account(did: h.clientDID.value) : nil
                let info = client.map { ClientInfo(name: $0.name, developer: $0.developer ?? "unknown developer") }
                    ?? ClientInfo(name: h.clientDID.value, developer: "unregistered agent")
                let denied = try await accountTypeDenials(m5.scopes, client: client, user: claims.iss)
                if let confirmation = try h.authorize(m5, credential: claims, clientInfo: info, policy: policy, alsoDenied: denied, now: now) {
                    // The user is not asked about a revoked credential, nor for a suspended
                    // account. Without a question, the completion's transaction checks both.
                    try await refuseIfRevoked(credential: claims.jti, user: claims.iss)
                    try await refuseIfSuspended(claims.iss, step: 5)
                    try await save(h, revision: stored.revision, event: "handshake.scope_request", outcome: "awaiting_user", now: now)
                    await channel.deliver(confirmation)
                    return .pending(pending(confirmation))
                }
                stored.handshake = h
                return .complete(try await complete(stored, now: now, event: "handshake.scope_request", copy: copy))
            } catch let error as ATHError {
                // A refused credential (or any refusal after a valid step 5) ends the handshake
                // like every other refusal after step 1, and is audited with it.
                if h.state != .failed { h.fail(error) }
                throw error
            }
        } catch let error as ATHError {
            if copy { throw StaleCopy() }
            try await saveFailure(&h, error, from: stored, event: "handshake.scope_request", now: now)
            throw error
        }
    }

    /// The agent's wait for steps 6-7: answers at once when decided, else waits up to `wait`
    /// seconds for the change: woken at once by this instance's change (`signals`), at the
    /// handshake's deadline, and every `retention.pollInterval` to see another instance's: at once
    /// when the store pushes other instances' changes (`HandshakeChangeFeed`), so that the look
    /// is only a fallback for a feed that was disconnected.
    public func result(handshakeID: String, wait: Double) async throws -> ScopeAnswer {
        // NaN would compare false with every deadline and hold the request until the handshake ends.
        let deadline = clock().addingTimeInterval(wait.isFinite ? min(max(wait, 0), 30) : 0)
        var stored = try await load(handshakeID)
        while true {
            let now = clock()
            if stored.handshake.expireIfDue(now: now) {
                try? await store.updateHandshake(
                    stored.handshake, expectedRevision: stored.revision, completion: nil, sealedProofKey: nil,
                    audit: [AuditEvent(at: Freshness.unix(now), event: "handshake.timeout", actor: "server", subject: handshakeID, outcome: stored.handshake.failure?.code ?? "")])
                signals.signal(handshakeID)
                stored = try await load(handshakeID)
            }
            let h = stored.handshake
            switch h.state {
            case .completed:
                // Without its outcome (a document from elsewhere), waiting would never end.
                guard let outcome = h.outcome else { throw ATHError(.handshakeNotFound, "this handshake's result is no longer kept") }
                return .complete(outcome)
            case .failed:
                throw h.failure?.error ?? ATHError(.handshakeFailed, "the handshake failed")
            case .awaitingConfirmation:
                if now >= deadline, let c = h.confirmation { return .pending(pending(c)) }
            default:
                throw ATHError(.unexpectedMessage, "the scope request has not been sent", step: 8)
            }
            // Until the wait ends, the handshake's own deadline (then it times out), or the next look.
            let untilExpiry = Double(h.deadline + 1) - now.timeIntervalSince1970
            let seconds = max(0.01, min(deadline.timeIntervalSince(now), untilExpiry))
            await signals.wait(for: handshakeID, timeout: min(.milliseconds(Int64(seconds * 1000)), retention.pollInterval))
            try Task.checkCancellation()
            // The revision alone tells whether anything changed: the whole document (its
            // transcript) is read again only then.
            if try await store.handshakeRevision(id: handshakeID) != stored.revision { stored = try await load(handshakeID) }
        }
    }

    func pending(_ c: AuthorizationConfirmationRequest) -> ConfirmationPending {
        ConfirmationPending(handshake_id: c.handshake_id, request_id: c.request_id, expires_at: c.expires_at, poll_interval: 1)
    }

    // MARK: Steps 6-7, the user's side

    /// Pending requests for the user who signed `authorization` (the `ATH-User` JWT).
    public func pendingConfirmations(authorization: String) async throws -> [AuthorizationConfirmationRequest] {
        let now = clock()
        let user = try await authenticateUser(authorization, now: now)
        return try await store.pendingConfirmations(userDID: user.value, now: Freshness.unix(now)).compactMap(\.confirmation)
    }

    public struct ConfirmationReceipt: Codable, Sendable {
        public var request_id: String
        public var status: String
        public var grant_id: String?
    }

    public func confirm(requestID: String, _ raw: JSONValue) async throws -> ConfirmationReceipt {
        let now = clock()
        guard var stored = try await store.handshake(requestID: requestID) else {
            throw ATHError(.confirmationNotFound, "no confirmation request \(requestID)", step: 7)
        }
        var h = stored.handshake
        guard let user = h.scopeRequest?.userDID else { throw ATHError(.confirmationNotFound, "no user for this request", step: 7) }
        do {
            let keys = try await userKeys(user)
            var lastError = ATHError(.userAuthenticationFailed, "the user has no active key", step: 7)
            var accepted = false
            for key in keys {
                var attempt = h
                do {
                    try attempt.receiveConfirmation(raw, userKey: key, now: now)
                    h = attempt
                    accepted = true
                    break
                } catch let e as ATHError where e.code == .invalidSignature {
                    lastError = e
                }
            }
            guard accepted else { throw lastError }
            stored.handshake = h
            let outcome = try await complete(stored, now: now, event: "handshake.user_approved")
            let grantID = outcome.handshake_complete["grant_id"]?.stringValue
            return ConfirmationReceipt(request_id: requestID, status: "approved", grant_id: grantID)
        } catch let error as ATHError {
            if error.code == .unexpectedMessage || error.code == .confirmationNotFound { throw error }
            if h.state != .failed { h.fail(error) }
            try await saveFailure(&h, error, from: stored, event: "handshake.user_decision", now: now)
            if error.code == .userDenied {
                return ConfirmationReceipt(request_id: requestID, status: "denied", grant_id: nil)
            }
            throw error
        }
    }

    // MARK: Shared step plumbing

    /// `copy`: `stored` is this instance's copy, not read from the store (see `step`).
    private func complete(_ stored: StoredHandshake, now: Date, event: String, copy: Bool = false) async throws -> HandshakeOutcome {
        var h = stored.handshake
        do {
            // Revoked or suspended while the user was being asked: nothing is granted. The store
            // checks the credential and both parties in the transaction that writes the grant
            // (and refuses it), so they are not read here first: three reads per handshake, and
            // a check before the write would leave a gap the one inside it does not.
            let completion = try await h.complete(policy: policy, tokenSigner: tokenCodec, identity: identity, now: now)
            let g = completion.grant
            try await store.updateHandshake(
                h, expectedRevision: stored.revision, completion: completion,
                sealedProofKey: try sealer.seal(bytes: Self.sessionKeyBytes(completion.session), for: completion.session.sessionID),
                audit: [
                    AuditEvent(at: Freshness.unix(now), event: event, actor: h.clientDID.value, subject: h.id, outcome: "ok"),
                    AuditEvent(
                        at: Freshness.unix(now), event: "grant.create", actor: g.userDID.value, subject: g.id, outcome: "ok",
                        detail: "client=\(g.clientDID.value) credential=\(g.credentialID) scopes=\(g.scopes.joined(separator: " ")) expires_at=\(g.expiresAt)"),
                ])
            // Nothing steps a completed handshake again: an agent asking for its result reads it.
            writtenHandshakes.removeValue(forKey: h.id)
            signals.signal(h.id)
            return completion.outcome
        } catch let error as ATHError where error.code == .credentialRevoked || error.code == .accountSuspended {
            if copy { throw StaleCopy() }
            h = stored.handshake
            h.fail(error)
            await writeFailure(h, error, revision: stored.revision, event: event, now: now)
            throw error
        }
    }

    private func save(_ h: ServerHandshake, revision: Int, event: String, outcome: String, detail: String = "", now: Date) async throws {
        try await store.updateHandshake(
            h, expectedRevision: revision, completion: nil, sealedProofKey: nil,
            audit: [
                AuditEvent(at: Freshness.unix(now), event: event, actor: h.clientDID.value, subject: h.id, outcome: outcome, detail: detail)
            ])
        written(h, after: revision)
        signals.signal(h.id)
    }

    /// Keeps what this instance just stored at `revision + 1` for the handshake's next step.
    private func written(_ h: ServerHandshake, after revision: Int) {
        writtenHandshakes.set(StoredHandshake(handshake: h, revision: revision + 1), forKey: h.id)
    }

    /// Persists a refusal that ended the handshake in this call. An out-of-order message changes
    /// nothing, and neither does a message to a handshake that had already ended: its row and its
    /// audit record were written when it ended, and a repeated post is queued with the other
    /// refusals (`refusals`), so that posting to an ended handshake costs no write of its own.
    private func saveFailure(_ h: inout ServerHandshake, _ error: ATHError, from stored: StoredHandshake, event: String, now: Date)
        async throws
    {
        guard h.state == .failed else { return }
        guard stored.handshake.state != .failed else {
            refusals.record(
                AuditEvent(
                    at: Freshness.unix(now), event: event, actor: h.clientDID.value, subject: h.id, outcome: error.code.rawValue,
                    detail: "the handshake had already ended"))
            return
        }
        await writeFailure(h, error, revision: stored.revision, event: event, now: now)
    }

    /// The ended handshake with its audit record, one transaction; agents waiting on it are woken.
    /// A conflict (another message changed it first) writes nothing: that change stands.
    private func writeFailure(_ h: ServerHandshake, _ error: ATHError, revision: Int, event: String, now: Date) async {
        writtenHandshakes.removeValue(forKey: h.id)
        try? await store.updateHandshake(
            h, expectedRevision: revision, completion: nil, sealedProofKey: nil,
            audit: [
                AuditEvent(
                    at: Freshness.unix(now), event: event, actor: h.clientDID.value, subject: h.id, outcome: error.code.rawValue,
                    detail: error.message)
            ])
        signals.signal(h.id)
    }

    /// Thrown by a step that ran on this instance's copy and was refused: it runs again on the
    /// stored handshake, which decides (and records) the refusal.
    private struct StaleCopy: Error {}

    /// Runs a step of the handshake `id` (3 or 5) on the copy this instance last wrote, if it
    /// holds one, without reading the store: the step's write is a check-and-set on the copy's
    /// revision, so a copy that another instance's step made stale writes nothing. A step on a
    /// copy that is refused for any reason (that conflict, or a message the copy's state does not
    /// expect and the stored state may) writes nothing and runs again on the stored handshake
    /// (`StaleCopy`): a copy never decides a refusal. So the usual step, which follows this
    /// instance's own write, reads nothing before its write: it used to read the revision first
    /// (a round trip per step on PostgreSQL).
    private func step<T>(_ id: String, _ body: (StoredHandshake, _ copy: Bool) async throws -> T) async throws -> T {
        if let written = writtenHandshakes.value(forKey: id) {
            do {
                return try await body(written, true)
            } catch is StaleCopy {
                writtenHandshakes.removeValue(forKey: id)
            }
        }
        return try await body(try await stored(id), false)
    }

    /// The handshake as it stands, for a reader (the agent's wait): this instance's copy while
    /// the stored revision is the copy's, else the stored document.
    private func load(_ id: String) async throws -> StoredHandshake {
        if let written = writtenHandshakes.value(forKey: id), try await store.handshakeRevision(id: id) == written.revision {
            return written
        }
        return try await stored(id)
    }

    /// The stored handshake. An id longer than any this server makes (and so never among its
    /// copies) names none, and is not looked up.
    private func stored(_ id: String) async throws -> StoredHandshake {
        guard id.utf8.count <= 128, let stored = try await store.handshake(id: id) else {
            throw ATHError(.handshakeNotFound, "no handshake with this id")
        }
        return stored
    }

    func audit(_ event: String, actor: String, subject: String, outcome: String, detail: String = "", at: Date) async throws {
        try await store.appendAudit([
            AuditEvent(at: Freshness.unix(at), event: event, actor: actor, subject: subject, outcome: outcome, detail: detail)
        ])
    }

    // MARK: Keys and identities

    /// The user's keys: the registry's active keys (a browser enrolled for the console among
    /// them), and for did:key also the key the identifier embeds.
    func userKeys(_ user: DID) async throws -> [PublicKey] {
        let registered = try await store.activeKeys(did: user.value)
        if let key = try user.embeddedKey() { return [key] + registered.filter { $0 != key } }
        return registered
    }

    /// The credential's signature and claims. Whether it was revoked, or its user suspended, is
    /// checked where each matters: before the user is asked, and in the transaction that writes
    /// the grant.
    func verifyCredential(_ credential: String, client: DID, now: Date) async throws -> UserCredentialClaims {
        let unverified = try UserCredential.read(credential)
        let (user, kid) = (unverified.user, unverified.header.kid)
        // A did:key's own key first, kept with its verifier; then the keys registered for the
        // user (a browser enrolled for the console among them), looked up each time.
        let claims: UserCredentialClaims
        if let viaDIDKey = try await didKeys.verify(unverified, client: client, server: identity.did, now: now) {
            claims = viaDIDKey
        } else {
            let keys = try await userKeys(user).filter { kid == nil || $0.thumbprint == kid }
            guard let key = keys.first else {
                throw ATHError(.invalidUserCredential, "no active key of \(user) signs this credential", step: 5)
            }
            claims = try await UserCredential.verify(
                unverified, verifier: try await JWTCodec(verifying: key), client: client, server: identity.did, now: now)
        }
        return claims
    }

    func refuseIfSuspended(_ did: String, step: Int) async throws {
        if try await store.isSuspended(did: did) {
            throw ATHError.suspended(did.prefix(256), step: step)
        }
    }

    func refuseIfRevoked(credential jti: String, user: String) async throws {
        if try await store.isCredentialRevoked(jti: jti, userDID: user) {
            throw ATHError.revokedCredential(step: 5)
        }
    }

    // MARK: The user's credentials

    /// The credentials of the user who signed `authorization` (the `ATH-User` JWT).
    public func credentials(authorization: String) async throws -> [CredentialUse] {
        let now = clock()
        let user = try await authenticateUser(authorization, now: now)
        return try await store.credentials(userDID: user.value, now: Freshness.unix(now))
    }

    /// Revokes one of the signing user's credentials: no handshake accepts it from now on, and
    /// every grant made with it ends (on this instance at once, on others within the status cache).
    public func revokeCredential(jti: String, authorization: String) async throws -> [String] {
        let now = clock()
        let user = try await authenticateUser(authorization, now: now)
        guard (1...256).contains(jti.utf8.count) else { throw ATHError(.malformedMessage, "bad credential id") }
        let t = Freshness.unix(now)
        let grants = try await store.revokeCredential(
            jti: jti, userDID: user.value, now: t,
            audit: { [AuditEvent(at: t, event: "credential.revoke", actor: user.value, subject: jti, outcome: "ok", detail: "grants=\($0.joined(separator: " "))")] })
        forget(grants: grants)
        return grants
    }

    // MARK: Suspension

    /// Suspends an account: it opens no handshake from now on, and every grant in force in which
    /// it is the agent or the user ends with its tokens (on this instance at once, on others
    /// within the status cache). Returns the ended grants.
    public func suspendAccount(_ did: String, by actor: String) async throws -> [String] {
        let t = Freshness.unix(clock())
        let grants = try await store.suspendAccount(
            did: did, now: t,
            audit: { [AuditEvent(at: t, event: "account.suspend", actor: actor, subject: did, outcome: "ok", detail: "grants=\($0.joined(separator: " "))")] })
        forget(grants: grants)
        return grants
    }

    public func reinstateAccount(_ did: String, by actor: String) async throws {
        let t = Freshness.unix(clock())
        try await store.reinstateAccount(
            did: did, audit: [AuditEvent(at: t, event: "account.reinstate", actor: actor, subject: did, outcome: "ok")])
    }

    /// Drops cached session state of ended grants, so that this instance refuses them at once.
    func forget(grants: [String]) {
        guard !grants.isEmpty else { return }
        let ended = Set(grants)
        sessions.removeAll { ended.contains($0.grant.id) }
    }

    func authenticateUser(_ authorization: String, now: Date) async throws -> DID {
        let prefix = UserRequestToken.scheme + " "
        if authorization.hasPrefix(Self.oidcScheme + " ") {
            return try await authenticateOpenIDUser(idToken: String(authorization.dropFirst(Self.oidcScheme.count + 1)), now: now)
        }
        guard authorization.hasPrefix(prefix) else {
            throw ATHError(.userAuthenticationFailed, "expected Authorization: \(UserRequestToken.scheme) <jwt>")
        }
        return try await verifyUserToken(String(authorization.dropFirst(prefix.count)), typ: UserRequestToken.typ, now: now)
    }

    /// A single-use token signed by one of the user's active keys, made for `typ`.
    func verifyUserToken(_ token: String, typ: String, now: Date) async throws -> DID {
        do {
            return try await checkUserToken(token, typ: typ, now: now)
        } catch let error as ATHError {
            // Refused before anyone was authenticated: queued, like every unauthenticated refusal.
            let issuer = (try? JWTCodec.unverifiedClaims(of: token, as: UserRequestClaims.self, error: .userAuthenticationFailed).iss) ?? "-"
            refusals.record(
                AuditEvent(
                    at: Freshness.unix(now), event: typ == UserRequestToken.typ ? "user.authenticate" : "console.enroll",
                    actor: String(issuer.prefix(256)), subject: "-", outcome: error.code.rawValue, detail: error.message))
            throw error
        }
    }

    private func checkUserToken(_ token: String, typ: String, now: Date) async throws -> DID {
        let header = try JWTCodec.header(of: token, error: .userAuthenticationFailed)
        let unverified = try JWTCodec.unverifiedClaims(of: token, as: UserRequestClaims.self, error: .userAuthenticationFailed)
        guard let user = try? DID(unverified.iss),
            let key = try await userKeys(user).first(where: { $0.thumbprint == header.kid })
        else { throw ATHError(.userAuthenticationFailed, "unknown user or key") }
        let claims = try await UserRequestToken.verify(token, key: key, server: identity.did, now: now, typ: typ)
        guard try await store.consumeNonce("user-req:\(claims.jti)", expiresAt: claims.exp, now: Freshness.unix(now)) else {
            throw ATHError(.userAuthenticationFailed, "this user request token was already used")
        }
        return user
    }

    /// Scopes the agent's or the user's account type on this service does not allow, with why.
    func accountTypeDenials(_ scopes: [String], client: Account?, user: String) async throws -> [String: String] {
        guard !policy.accountTypes.isEmpty else { return [:] }
        let userType = try await store.account(did: user)?.accountType
        var denied: [String: String] = [:]
        for scope in scopes {
            denied[scope] =
                policy.accountTypeDenial(of: scope, type: client?.accountType, party: "agent")
                ?? policy.accountTypeDenial(of: scope, type: userType, party: "user")
        }
        return denied
    }

    // MARK: Account types

    /// Gives an account its type on this service (nil: none). Grants in force that hold a scope
    /// the new type does not allow end at once: a type is a limit, and lowering it must bite.
    public func setAccountType(_ did: String, to type: String?, by actor: String) async throws -> [String] {
        let t = Freshness.unix(clock())
        try policy.validateAccountType(type)
        let policy = self.policy
        let ended = try await store.setAccountType(
            did: did, to: type, now: t,
            ending: { grant, asAgent in
                grant.scopes.contains { policy.accountTypeDenial(of: $0, type: type, party: asAgent ? "agent" : "user") != nil }
            },
            audit: {
                [
                    AuditEvent(
                        at: t, event: "account.set_type", actor: actor, subject: did, outcome: "ok",
                        detail: "type=\(type ?? "-") grants=\($0.joined(separator: " "))")
                ]
            })
        forget(grants: ended)
        return ended
    }
}
