import Foundation

/// The server's side of one handshake, as a value: each step takes a message and returns the
/// reply, or throws the refusal. It does no I/O; the adapter loads it from the store, calls one
/// step, and saves it (with the grant, when it completes) in one transaction.
///
/// Any refusal after step 1 ends the handshake (state `failed`): a peer cannot retry a step
/// with a corrected forgery. A message that arrives in the wrong state is refused with
/// UNEXPECTED_MESSAGE and leaves the handshake as it was.
public struct ServerHandshake: Codable, Sendable {
    public enum State: String, Codable, Sendable {
        case awaitingIdentityProof = "awaiting_identity_proof"
        case awaitingScopeRequest = "awaiting_scope_request"
        case awaitingConfirmation = "awaiting_confirmation"
        case readyToComplete = "ready_to_complete"
        case completed
        case failed
    }

    /// What the server accepted in step 5.
    public struct ScopeRequestState: Codable, Sendable {
        public var userDID: DID
        public var credentialID: String
        public var credentialExpiresAt: Int64
        public var scopes: [String]
        public var deniedByPolicy: [DeniedScope]
        public var ttl: Int
        public var context: String
        public var keyShare: KeyShare
    }

    /// What the user answered in step 7.
    public struct UserDecision: Codable, Sendable {
        public var approvedScopes: [String]
        public var expiresAt: Int64
    }

    public let id: String
    public private(set) var state: State
    public let clientDID: DID
    /// Stored as its PEM (see `PublicKey: Codable`), parsed once per load rather than per step.
    public let clientKey: PublicKey
    public let serverDID: DID
    public let version: String
    public let algorithm: SignatureAlgorithm
    public private(set) var transcript: Transcript
    public let createdAt: Int64
    public private(set) var deadline: Int64
    public private(set) var scopeRequest: ScopeRequestState?
    public private(set) var confirmation: AuthorizationConfirmationRequest?
    public private(set) var decision: UserDecision?
    public private(set) var failure: ATHErrorBody?
    public private(set) var outcome: HandshakeOutcome?
    /// The AIC of the agent's verified certificate (mutual TLS at step 1, or step-3
    /// credentials), once the adapter checked that the client's account holds it.
    public private(set) var clientAIC: String?
    /// The thumbprint of the key step 2 announced: step 9 is signed with the same key, so that a
    /// handshake in flight when the server key rotates still completes on any instance holding
    /// it. Absent from handshakes stored before it was recorded: those use the algorithm's key.
    public private(set) var serverKeyID: String? = nil

    public mutating func bindAgentCertificate(aic: String) {
        clientAIC = aic
    }

    // MARK: Steps 1-2

    /// Validates a handshake request and answers with the signed step-2 response.
    /// `registeredKey` is the client's key in the server's registry, if it has one.
    public static func begin(
        request raw: JSONValue, id: String, identity: ServerIdentity, policy: ServerPolicy,
        registeredKey: PublicKey?, now: Date, randomness: HandshakeRandomness = .system
    ) throws -> (ServerHandshake, JSONValue) {
        let m1 = try raw.message(HandshakeRequest.self, step: 1)
        // A handshake with itself would let an attacker reflect the server's own signed
        // messages back to it as the client's.
        guard m1.client_did != identity.did else {
            throw ATHError(.malformedMessage, "client_did is this server's own DID", step: 1)
        }
        try Freshness.check(m1.timestamp, now: now, step: 1)
        try Nonce.validate(m1.nonce, step: 1)
        let (clientKey, compressed) = try PublicKey.read(pem: m1.client_pubkey)
        if try m1.client_did.carries(clientKey, compressedP256: compressed) == false {
            throw ATHError(.keyMismatch, "client_pubkey is not the key of \(m1.client_did)", step: 1)
        }
        if m1.client_did.method == .ath {
            if let registeredKey, registeredKey != clientKey {
                throw ATHError(.keyMismatch, "client_pubkey is not the key registered for \(m1.client_did)", step: 1)
            }
            if registeredKey == nil && policy.requireRegisteredClients {
                throw ATHError(.unknownIdentity, "\(m1.client_did) is not a registered agent", step: 1)
            }
        }
        let version = try Negotiation.version(offered: m1.versions)
        guard m1.capabilities.contains(clientKey.algorithm.rawValue) else {
            throw ATHError(.unsupportedAlgorithm, "client_pubkey's algorithm \(clientKey.algorithm.rawValue) is not in capabilities", step: 1)
        }
        let alg = try Negotiation.algorithm(offered: m1.capabilities, available: identity.keys.map(\.algorithm))
        let (key, keyPEM) = identity.signingKey(for: alg)!
        let t = Freshness.unix(now)
        var transcript = Transcript()
        try transcript.append(raw)
        let m2 = HandshakeResponse(
            handshake_id: id, server_did: identity.did, server_pubkey: keyPEM, version: version,
            capabilities: [alg.rawValue] + (m1.capabilities.contains("TLS1.3") ? ["TLS1.3"] : []), nonce: randomness.value(.serverNonce),
            signature: "", timestamp: t)
        let signed = try SignedMessage.sign(
            m2, .serverIdentity, client: m1.client_did, server: identity.did, user: nil, after: transcript, key: key)
        transcript.append(signed)
        var handshake = ServerHandshake(
            id: id, state: .awaitingIdentityProof, clientDID: m1.client_did, clientKey: clientKey,
            serverDID: identity.did, version: version, algorithm: alg, transcript: transcript, createdAt: t,
            deadline: t + Int64(policy.handshakeTimeout))
        handshake.serverKeyID = key.publicKey.thumbprint
        return (handshake, signed.value)
    }

    private init(
        id: String, state: State, clientDID: DID, clientKey: PublicKey, serverDID: DID, version: String,
        algorithm: SignatureAlgorithm, transcript: Transcript, createdAt: Int64, deadline: Int64
    ) {
        self.id = id
        self.state = state
        self.clientDID = clientDID
        self.clientKey = clientKey
        self.serverDID = serverDID
        self.version = version
        self.algorithm = algorithm
        self.transcript = transcript
        self.createdAt = createdAt
        self.deadline = deadline
    }

    /// The canonical JSON of this handshake, as `CanonicalJSON.bytes(of:)` writes it, byte for
    /// byte, with the transcript's messages copied from the bytes kept when each was appended
    /// rather than encoded and canonicalized again: the transcript is most of the document each
    /// step stores.
    public func storedJSON() throws -> [UInt8] {
        var rest = self
        rest.transcript = Transcript()
        let marked = try CanonicalJSON.marked(JSONValue.of(rest)) { parent, key in parent == nil && key == "transcript" }
        let messages = transcript.canonicalEncoding()
        return try marked.replacingValue(size: messages.count) { $0 += messages } ?? CanonicalJSON.bytes(of: self)
    }

    /// The nonce of step 1, which the server's replay cache must not have seen.
    public var clientNonce: String { transcript.messages.first?["nonce"]?.stringValue ?? "" }

    // MARK: Steps 3-4

    /// `acceptsCredentials`: whether the adapter will verify certificates sent in `credentials`
    /// (it then reads them from the message and calls `bindAgentCertificate`). A server that
    /// cannot check them refuses them rather than ignoring a claim it did not verify.
    public mutating func receiveIdentityProof(_ raw: JSONValue, policy: ServerPolicy, now: Date, acceptsCredentials: Bool = false) throws
        -> JSONValue
    {
        try expect(.awaitingIdentityProof, now: now, step: 3)
        do {
            let m3 = try raw.message(IdentityProof.self, step: 3)
            try checkID(m3.handshake_id, step: 3)
            try Freshness.check(m3.timestamp, now: now, step: 3)
            let received = try SignedMessage(received: raw)
            try SigningInput(
                .clientIdentity, client: clientDID, server: serverDID, transcriptHash: transcript.hash(includingUnsigned: received)
            ).verify(m3.signature, with: clientKey, step: 3)
            if let credentials = m3.credentials, !credentials.isEmpty, !acceptsCredentials {
                throw ATHError(.unsupportedAlgorithm, "identity credentials (certificates) are not accepted by this server", step: 3)
            }
            transcript.append(received)
            let m4 = IdentityResult(
                handshake_id: id, success: true, metadata: policy.metadata, error: nil, timestamp: Freshness.unix(now))
            let value = try JSONValue.of(m4)
            try transcript.append(value)
            state = .awaitingScopeRequest
            return value
        } catch {
            throw recordFailure(error)
        }
    }

    // MARK: Step 5

    /// Checks the step-5 message and the client's signature; returns it so the adapter can
    /// look up the user's key and verify the credential before `authorize`.
    public mutating func receiveScopeRequest(_ raw: JSONValue, policy: ServerPolicy, now: Date) throws -> ScopeRequest {
        try expect(.awaitingScopeRequest, now: now, step: 5)
        do {
            let m5 = try raw.message(ScopeRequest.self, step: 5)
            try checkID(m5.handshake_id, step: 5)
            try Freshness.check(m5.timestamp, now: now, step: 5)
            guard let signature = m5.user_authorization.signature else {
                throw ATHError(.invalidSignature, "user_authorization.signature is missing", step: 5)
            }
            let received = try SignedMessage(received: raw)
            try SigningInput(
                .scopeRequest, client: clientDID, server: serverDID, transcriptHash: transcript.hash(includingUnsigned: received)
            ).verify(signature, with: clientKey, step: 5)
            guard !m5.scopes.isEmpty, Set(m5.scopes).count == m5.scopes.count else {
                throw ATHError(.malformedMessage, "scopes must be a non-empty list without repeats", step: 5)
            }
            let unsupported = m5.scopes.filter { !policy.scopesSupported.contains($0) }
            guard unsupported.isEmpty else {
                throw ATHError(.scopeNotSupported, "not offered by this server: \(unsupported.joined(separator: ", "))", step: 5)
            }
            guard m5.ttl > 0 else { throw ATHError(.malformedMessage, "ttl must be positive", step: 5) }
            guard let kex = KeyExchangeAlgorithm(rawValue: m5.key_exchange.alg) else {
                throw ATHError(.unsupportedAlgorithm, "key exchange \(m5.key_exchange.alg) is not ECDH-P256 or X25519", step: 5)
            }
            try kex.validate(publicKey: m5.key_exchange.public_key)
            guard m5.context.count <= 1000 else { throw ATHError(.malformedMessage, "context is over 1000 characters", step: 5) }
            transcript.append(received)
            return m5
        } catch {
            throw recordFailure(error)
        }
    }

    /// Applies the verified user credential and the server's policy. Returns the step-6
    /// request when the user must confirm, nil when the handshake can complete at once.
    public mutating func authorize(
        _ m5: ScopeRequest, credential: UserCredentialClaims, clientInfo: ClientInfo, policy: ServerPolicy,
        alsoDenied: [String: String] = [:], now: Date, randomness: HandshakeRandomness = .system
    ) throws -> AuthorizationConfirmationRequest? {
        do {
            let user = try DID(credential.iss)
            let beyond = m5.scopes.filter { !credential.scopes.contains($0) }
            guard beyond.isEmpty else {
                throw ATHError(.scopeExceedsCredential, "the user did not delegate: \(beyond.joined(separator: ", "))", step: 5)
            }
            // Denied by the server's policy, or by what the caller found (e.g. the parties' account types).
            let denial = { (s: String) in policy.deniedScopes[s] ?? alsoDenied[s] }
            let denied = m5.scopes.compactMap { s in denial(s).map { DeniedScope(scope: s, reason: $0) } }
            let allowed = m5.scopes.filter { denial($0) == nil }
            guard !allowed.isEmpty else {
                throw ATHError(.noScopesGranted, "server policy grants none of the requested scopes", step: 5)
            }
            let t = Freshness.unix(now)
            let ttl = min(m5.ttl, policy.tokenMaxTTL, Int(credential.exp - t))
            scopeRequest = ScopeRequestState(
                userDID: user, credentialID: credential.jti, credentialExpiresAt: credential.exp, scopes: allowed,
                deniedByPolicy: denied, ttl: ttl, context: m5.context, keyShare: m5.key_exchange)
            guard policy.requireUserConfirmation else {
                decision = UserDecision(approvedScopes: allowed, expiresAt: credential.exp)
                state = .readyToComplete
                return nil
            }
            let request = AuthorizationConfirmationRequest(
                request_id: randomness.value(.requestID), handshake_id: id, server_did: serverDID, user_did: user, client_did: clientDID,
                client_info: clientInfo, requested_scopes: allowed, context: m5.context, ttl: ttl,
                restrictions: policy.restrictions, expires_at: t + Int64(policy.confirmationTimeout),
                transcript_hash: Base64URL.encode(try transcript.hash()), timestamp: t)
            confirmation = request
            deadline = request.expires_at
            state = .awaitingConfirmation
            return request
        } catch {
            throw recordFailure(error)
        }
    }

    // MARK: Step 7

    public mutating func receiveConfirmation(_ raw: JSONValue, userKey: PublicKey, now: Date) throws {
        try expect(.awaitingConfirmation, now: now, step: 7)
        do {
            let m7 = try raw.message(AuthorizationConfirmationResponse.self, step: 7)
            guard let request = confirmation, let scope = scopeRequest, m7.request_id == request.request_id else {
                throw ATHError(.confirmationNotFound, "no pending confirmation with this request_id", step: 7)
            }
            try Freshness.check(m7.timestamp, now: now, step: 7)
            var userTranscript = Transcript()
            try userTranscript.append(JSONValue.of(request))
            try SigningInput(
                .userConfirmation, client: clientDID, server: serverDID, user: scope.userDID,
                transcriptHash: userTranscript.hash(including: raw.withoutSignature())
            ).verify(m7.signature, with: userKey, step: 7)
            guard m7.approved, !m7.approved_scopes.isEmpty else {
                throw ATHError(.userDenied, "the user denied the request", step: 7)
            }
            let extra = m7.approved_scopes.filter { !scope.scopes.contains($0) }
            guard extra.isEmpty else {
                throw ATHError(.malformedMessage, "approved_scopes holds scopes that were not requested: \(extra.joined(separator: ", "))", step: 7)
            }
            guard m7.expires_at > Freshness.unix(now) else {
                throw ATHError(.malformedMessage, "the approval's expires_at is in the past", step: 7)
            }
            decision = UserDecision(approvedScopes: m7.approved_scopes, expiresAt: m7.expires_at)
            state = .readyToComplete
        } catch {
            throw recordFailure(error)
        }
    }

    /// Ends a handshake whose deadline passed; returns true if this call changed it.
    public mutating func expireIfDue(now: Date) -> Bool {
        guard state != .completed, state != .failed, Freshness.unix(now) > deadline else { return false }
        let error =
            state == .awaitingConfirmation
            ? ATHError(.confirmationTimeout, "the user did not answer in time", step: 7)
            : ATHError(.handshakeExpired, "the handshake took too long", step: nil)
        fail(error)
        return true
    }

    // MARK: Steps 8-9

    /// What the completed handshake creates; stored together with the handshake in one transaction.
    public struct Completion: Sendable {
        public var outcome: HandshakeOutcome
        public var grant: Grant
        public var session: SessionSecrets
        public var token: AccessTokenClaims
    }

    public mutating func complete(
        policy: ServerPolicy, tokenSigner: JWTCodec, identity: ServerIdentity, now: Date, randomness: HandshakeRandomness = .system
    ) async throws -> Completion {
        guard state == .readyToComplete, let scope = scopeRequest, let decision else {
            throw ATHError(.unexpectedMessage, "handshake is not ready to complete", step: 8)
        }
        let t = Freshness.unix(now)
        let granted = scope.scopes.filter(decision.approvedScopes.contains)
        let deniedByUser = scope.scopes.filter { !decision.approvedScopes.contains($0) }.map {
            DeniedScope(scope: $0, reason: "denied_by_user")
        }
        let grantEnd = min(t + Int64(scope.ttl), scope.credentialExpiresAt, decision.expiresAt)
        let ttl = Int(grantEnd - t)
        guard ttl > 0 else {
            let error = ATHError(.userCredentialExpired, "the user's authorization expired before the grant", step: 8)
            fail(error)
            throw error
        }
        let m8 = try JSONValue.of(
            ScopeResult(
                handshake_id: id, scopes_granted: granted, scopes_denied: scope.deniedByPolicy + deniedByUser, ttl_granted: ttl,
                restrictions: policy.restrictions, timestamp: t))
        try transcript.append(m8)

        let kex = KeyExchangeAlgorithm(rawValue: scope.keyShare.alg)!
        let ephemeral = randomness.ephemeralKey(.server, kex)
        let secrets: SessionSecrets
        do {
            secrets = SessionSecrets(
                shared: try ephemeral.sharedSecret(with: scope.keyShare.public_key), transcriptHash: try transcript.hash())
        } catch let e as ATHError {
            fail(e)
            throw e
        }
        let grant = Grant(
            id: randomness.value(.grantID), handshakeID: id, clientDID: clientDID, userDID: scope.userDID, scopes: granted,
            restrictions: policy.restrictions, credentialID: scope.credentialID, createdAt: t, expiresAt: grantEnd)
        let claims = AccessTokenClaims(
            iss: serverDID.value, aud: serverDID.value, sub: scope.userDID.value, client_did: clientDID.value,
            scope: granted.joined(separator: " "), iat: t, exp: min(grantEnd, t + AccessToken.maxLifetime), jti: randomness.value(.tokenID),
            gid: grant.id, sid: secrets.sessionID)
        let token = try await tokenSigner.sign(claims, typ: AccessToken.typ)
        let m9 = HandshakeComplete(
            handshake_id: id, key_exchange_alg: kex.rawValue, key_exchange_params: ephemeral.publicKey,
            cipher_suite: "AES-256-GCM", access_token: token, token_expires_at: claims.exp, grant_id: grant.id, signature: "",
            timestamp: t)
        guard let serverKey = serverKeyID.map(identity.key(thumbprint:)) ?? identity.key(for: algorithm) else {
            // Fails before anything is issued: the agent could not check a step 9 signed with
            // another key than the one step 2 announced.
            let error = ATHError(
                .handshakeFailed, "this server no longer holds the key this handshake began with; start a new handshake", step: 9)
            fail(error)
            throw error
        }
        let m9Signed = try SignedMessage.sign(
            m9, .handshakeComplete, client: clientDID, server: serverDID, user: nil, after: transcript, key: serverKey)
        let outcome = HandshakeOutcome(scope_result: m8, handshake_complete: m9Signed.value)
        self.outcome = outcome
        state = .completed
        transcript = Transcript()  // ended: see `fail`
        return Completion(outcome: outcome, grant: grant, session: secrets, token: claims)
    }

    // MARK: Helpers

    private mutating func expect(_ wanted: State, now: Date, step: Int) throws {
        if expireIfDue(now: now) { throw failure!.error }
        if state == .failed, let failure { throw failure.error }
        guard state == wanted else {
            throw ATHError(.unexpectedMessage, "step \(step) is not expected now (handshake is \(state.rawValue))", step: step)
        }
    }

    private func checkID(_ given: String, step: Int) throws {
        guard given == id else { throw ATHError(.malformedMessage, "handshake_id does not match", step: step) }
    }

    /// An ended handshake (completed or failed) drops its transcript. Every signature over it was
    /// checked or made, and no step reads it again, so it is stored without it: kept, it was most
    /// of the 8 kB that each grant's handshake held for the grant's whole life. The audit records
    /// of each step, and of the grant with the credential that authorized it, stay.
    public mutating func fail(_ error: ATHError) {
        state = .failed
        failure = ATHErrorBody(error)
        transcript = Transcript()
    }

    /// Ends the handshake with `error`, mapped to INTERNAL_ERROR when it is not a protocol error.
    private mutating func recordFailure(_ error: any Error) -> ATHError {
        let e = (error as? ATHError) ?? ATHError(.internalError, "unexpected failure")
        fail(e)
        return e
    }

}

/// A grant: the agent may act for the user within these scopes and restrictions until expiresAt.
public struct Grant: Codable, Sendable, Equatable {
    public var id: String
    public var handshakeID: String
    public var clientDID: DID
    public var userDID: DID
    public var scopes: [String]
    public var restrictions: Restrictions
    public var credentialID: String
    public var createdAt: Int64
    public var expiresAt: Int64
    public var revoked: Bool = false

    public init(
        id: String, handshakeID: String, clientDID: DID, userDID: DID, scopes: [String], restrictions: Restrictions,
        credentialID: String, createdAt: Int64, expiresAt: Int64
    ) {
        self.id = id
        self.handshakeID = handshakeID
        self.clientDID = clientDID
        self.userDID = userDID
        self.scopes = scopes
        self.restrictions = restrictions
        self.credentialID = credentialID
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }
}
