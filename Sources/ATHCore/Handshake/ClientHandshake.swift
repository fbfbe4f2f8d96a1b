import Foundation

/// The agent's side of one handshake, as a value: it makes each client message and checks each
/// server message against everything it sent and received, refusing out-of-order steps.
public struct ClientHandshake: Sendable {
    public enum State: Sendable, Equatable {
        case start, sentRequest, sentProof, identified, sentScopeRequest, complete, failed
    }

    public let did: DID
    let key: PrivateKey
    public let versions: [String]
    public let capabilities: [String]
    let keyExchange: KeyExchangeAlgorithm
    /// When set, the server must present this DID (and, for did:key, its embedded key).
    let expectedServer: DID?
    let pinnedServerKey: PublicKey?
    let randomness: HandshakeRandomness
    /// Step-3 `credentials`: the agent's certificate chain (base64 DER, leaf first), for a
    /// server that takes certificates but does not see the agent's TLS client certificate.
    let credentials: [String]?
    public private(set) var state: State = .start
    public private(set) var transcript = Transcript()
    public private(set) var handshakeID: String?
    public private(set) var serverDID: DID?
    public private(set) var serverKey: PublicKey?
    public private(set) var metadata: IdentityMetadata?
    private var ephemeral: EphemeralKey?
    private var requestedScopes: [String] = []

    public init(
        did: DID, key: PrivateKey, versions: [String] = Negotiation.supportedVersions,
        capabilities: [String]? = nil, keyExchange: KeyExchangeAlgorithm = .ecdhP256, expectedServer: DID? = nil,
        pinnedServerKey: PublicKey? = nil, randomness: HandshakeRandomness = .system, credentials: [String]? = nil
    ) {
        self.credentials = credentials
        self.did = did
        self.key = key
        self.versions = versions
        self.capabilities = capabilities ?? (SignatureAlgorithm.preference.map(\.rawValue) + ["TLS1.3"])
        self.keyExchange = keyExchange
        self.expectedServer = expectedServer
        self.pinnedServerKey = pinnedServerKey
        self.randomness = randomness
    }

    /// Step 1.
    public mutating func makeRequest(now: Date) throws -> JSONValue {
        try expect(.start)
        let m1 = try JSONValue.of(
            HandshakeRequest(
                client_did: did, client_pubkey: key.publicKey.pem, versions: versions, capabilities: capabilities,
                nonce: randomness.value(.clientNonce), timestamp: Freshness.unix(now)))
        try transcript.append(m1)
        state = .sentRequest
        return m1
    }

    /// Step 2 in, step 3 out.
    public mutating func receiveResponse(_ raw: JSONValue, now: Date) throws -> JSONValue {
        try expect(.sentRequest)
        do {
            let m2 = try raw.message(HandshakeResponse.self, step: 2)
            try Freshness.check(m2.timestamp, now: now, step: 2)
            try Nonce.validate(m2.nonce, step: 2)
            guard versions.contains(m2.version) else {
                throw ATHError(.downgradeDetected, "server chose version \(m2.version), which was not offered", step: 2)
            }
            let serverKey = try PublicKey(pem: m2.server_pubkey)
            guard capabilities.contains(serverKey.algorithm.rawValue), m2.capabilities.contains(serverKey.algorithm.rawValue) else {
                throw ATHError(.downgradeDetected, "server signs with \(serverKey.algorithm.rawValue), which was not offered", step: 2)
            }
            if let expectedServer, expectedServer != m2.server_did {
                throw ATHError(.unknownIdentity, "server is \(m2.server_did), expected \(expectedServer)", step: 2)
            }
            if try m2.server_did.carries(serverKey) == false {
                throw ATHError(.keyMismatch, "server_pubkey is not the key of \(m2.server_did)", step: 2)
            }
            if let pinnedServerKey, pinnedServerKey != serverKey {
                throw ATHError(.keyMismatch, "server_pubkey is not the pinned key", step: 2)
            }
            let received = try SignedMessage(received: raw)
            try SigningInput(
                .serverIdentity, client: did, server: m2.server_did, transcriptHash: transcript.hash(includingUnsigned: received)
            ).verify(m2.signature, with: serverKey, step: 2)
            transcript.append(received)
            handshakeID = m2.handshake_id
            serverDID = m2.server_did
            self.serverKey = serverKey
            let m3 = IdentityProof(handshake_id: m2.handshake_id, signature: "", credentials: credentials, timestamp: Freshness.unix(now))
            let signed = try SignedMessage.sign(
                m3, .clientIdentity, client: did, server: m2.server_did, user: nil, after: transcript, key: key)
            transcript.append(signed)
            let value = signed.value
            state = .sentProof
            return value
        } catch {
            state = .failed
            throw error
        }
    }

    /// Step 4.
    public mutating func receiveIdentityResult(_ raw: JSONValue, now: Date) throws -> IdentityMetadata {
        try expect(.sentProof)
        do {
            let m4 = try raw.message(IdentityResult.self, step: 4)
            try Freshness.check(m4.timestamp, now: now, step: 4)
            guard m4.handshake_id == handshakeID else { throw ATHError(.malformedMessage, "handshake_id does not match", step: 4) }
            guard m4.success, let metadata = m4.metadata else {
                throw m4.error?.error ?? ATHError(.handshakeFailed, "server refused the identity proof", step: 4)
            }
            try transcript.append(raw)
            self.metadata = metadata
            state = .identified
            return metadata
        } catch {
            state = .failed
            throw error
        }
    }

    /// Step 5: asks for `scopes` for `ttl` seconds, carrying the user's credential.
    public mutating func makeScopeRequest(scopes: [String], ttl: Int, credential: String, context: String, now: Date) throws -> JSONValue {
        try expect(.identified)
        do {
            guard let handshakeID, let serverDID else { throw ATHError(.unexpectedMessage, "no handshake", step: 5) }
            let ephemeral = randomness.ephemeralKey(.client, keyExchange)
            let m5 = ScopeRequest(
                handshake_id: handshakeID, scopes: scopes, ttl: ttl,
                user_authorization: UserAuthorization(credential: credential, signature: nil), context: context,
                key_exchange: KeyShare(alg: keyExchange.rawValue, public_key: ephemeral.publicKey), timestamp: Freshness.unix(now))
            let signed = try SignedMessage.sign(m5, .scopeRequest, client: did, server: serverDID, user: nil, after: transcript, key: key)
            transcript.append(signed)
            let value = signed.value
            self.ephemeral = ephemeral
            requestedScopes = scopes
            state = .sentScopeRequest
            return value
        } catch {
            state = .failed
            throw error
        }
    }

    /// Steps 8 and 9: checks the server's signature over the whole transcript and derives the
    /// session secrets.
    public mutating func receiveOutcome(_ outcome: HandshakeOutcome, now: Date) throws -> EstablishedGrant {
        try expect(.sentScopeRequest)
        do {
            guard let handshakeID, let serverDID, let serverKey, let ephemeral else {
                throw ATHError(.unexpectedMessage, "no handshake", step: 8)
            }
            let m8 = try outcome.scope_result.message(ScopeResult.self, step: 8)
            let m9 = try outcome.handshake_complete.message(HandshakeComplete.self, step: 9)
            guard m8.handshake_id == handshakeID, m9.handshake_id == handshakeID else {
                throw ATHError(.malformedMessage, "handshake_id does not match", step: 8)
            }
            try Freshness.check(m8.timestamp, now: now, step: 8)
            try Freshness.check(m9.timestamp, now: now, step: 9)
            let extra = m8.scopes_granted.filter { !requestedScopes.contains($0) }
            guard extra.isEmpty else {
                throw ATHError(.malformedMessage, "server granted scopes that were not requested", step: 8)
            }
            try transcript.append(outcome.scope_result)
            let keyHash = try transcript.hash()
            let received = try SignedMessage(received: outcome.handshake_complete)
            try SigningInput(
                .handshakeComplete, client: did, server: serverDID, transcriptHash: transcript.hash(includingUnsigned: received)
            ).verify(m9.signature, with: serverKey, step: 9)
            guard m9.key_exchange_alg == ephemeral.algorithm.rawValue else {
                throw ATHError(.downgradeDetected, "server answered the key exchange with \(m9.key_exchange_alg)", step: 9)
            }
            let secrets = SessionSecrets(shared: try ephemeral.sharedSecret(with: m9.key_exchange_params), transcriptHash: keyHash)
            transcript.append(received)
            self.ephemeral = nil
            state = .complete
            return EstablishedGrant(
                handshakeID: handshakeID, grantID: m9.grant_id, serverDID: serverDID, scopesGranted: m8.scopes_granted,
                scopesDenied: m8.scopes_denied, ttlGranted: m8.ttl_granted, grantExpiresAt: m8.timestamp + Int64(m8.ttl_granted),
                restrictions: m8.restrictions, accessToken: m9.access_token, tokenExpiresAt: m9.token_expires_at,
                cipherSuite: m9.cipher_suite, secrets: secrets)
        } catch {
            state = .failed
            throw error
        }
    }

    private func expect(_ wanted: State) throws {
        guard state == wanted else {
            throw ATHError(.unexpectedMessage, "the client handshake is in state \(state), not \(wanted)")
        }
    }

}

/// What a successful handshake gives the agent.
public struct EstablishedGrant: Sendable {
    public var handshakeID: String
    public var grantID: String
    public var serverDID: DID
    public var scopesGranted: [String]
    public var scopesDenied: [DeniedScope]
    public var ttlGranted: Int
    public var grantExpiresAt: Int64
    public var restrictions: Restrictions
    public var accessToken: String
    public var tokenExpiresAt: Int64
    public var cipherSuite: String
    public var secrets: SessionSecrets
}
