import ATHCore
import Foundation
import Testing

/// Client and server state machines driven against each other in memory: every check that does
/// not need a network.
@Suite struct HandshakeStateMachineTests {
    let now = Date()
    let serverDID = try! DID("did:ath:shop")
    let policy = ServerPolicy(scopesSupported: ["goods:read", "order:create", "user:profile"], tokenMaxTTL: 7200)

    func server(_ algs: [SignatureAlgorithm] = [.es256]) -> ServerIdentity {
        ServerIdentity(did: serverDID, keys: algs.map { PrivateKey.generate($0) })
    }

    @Test(arguments: [SignatureAlgorithm.es256, .edDSA])
    func fullHandshake(clientAlg: SignatureAlgorithm) async throws {
        let identity = server([.es256, .edDSA])
        let agentKey = PrivateKey.generate(clientAlg)
        let userKey = PrivateKey.generate(.es256)
        let agent = DID.key(agentKey.publicKey)
        let user = DID.key(userKey.publicKey)
        var client = ClientHandshake(did: agent, key: agentKey, expectedServer: serverDID)

        let m1 = try client.makeRequest(now: now)
        var (srv, m2) = try ServerHandshake.begin(request: m1, id: "h1", identity: identity, policy: policy, registeredKey: nil, now: now)
        #expect(m2["capabilities"] == ["EdDSA", "TLS1.3"])  // the strongest common algorithm
        let m3 = try client.receiveResponse(m2, now: now)
        let m4 = try srv.receiveIdentityProof(m3, policy: policy, now: now)
        let metadata = try client.receiveIdentityResult(m4, now: now)
        #expect(metadata.scopes_supported.contains("goods:read"))

        let credential = try await UserCredential.issue(user: user, key: userKey, client: agent, scopes: ["goods:read", "order:create"], validFor: 7200, now: now)
        let m5 = try client.makeScopeRequest(scopes: ["goods:read", "order:create"], ttl: 9999, credential: credential, context: "shop", now: now)
        let request = try srv.receiveScopeRequest(m5, policy: policy, now: now)
        let claims = try await UserCredential.verify(credential, userKey: userKey.publicKey, client: agent, server: serverDID, now: now)
        let m6 = try #require(try srv.authorize(request, credential: claims, clientInfo: ClientInfo(name: "a", developer: "d"), policy: policy, now: now))
        #expect(srv.state == .awaitingConfirmation)
        let m7 = try UserConfirmation.answer(m6, approvedScopes: ["goods:read"], key: userKey, now: now)
        try srv.receiveConfirmation(m7, userKey: userKey.publicKey, now: now)
        let completion = try await srv.complete(policy: policy, tokenSigner: JWTCodec(key: identity.tokenKey), identity: identity, now: now)
        let grant = try client.receiveOutcome(completion.outcome, now: now)

        #expect(grant.scopesGranted == ["goods:read"])
        #expect(grant.scopesDenied == [DeniedScope(scope: "order:create", reason: "denied_by_user")])
        #expect(grant.ttlGranted == 7200)  // capped at token_max_ttl
        #expect(grant.tokenExpiresAt - Freshness.unix(now) == 3600)  // a token lives at most an hour
        #expect(grant.secrets == completion.session)  // both sides derived the same keys
        #expect(completion.token.sid == grant.secrets.sessionID)
        // Ended, it keeps no transcript: nothing reads it again, and it is stored without it.
        #expect(srv.state == .completed && srv.transcript.messages.isEmpty)
    }

    /// A handshake in flight when the server key rotates: step 9 is signed with the key step 2
    /// announced while the server holds it (accepted), and refused, with nothing issued, once it
    /// does not. The client checks step 9 against the announced key, so this is what it needs.
    @Test(arguments: [true, false])
    func aHandshakeInFlightOutlivesARotation(keepsOldKey: Bool) async throws {
        let old = server()
        let rotated = ServerIdentity(did: serverDID, keys: [.generate(.es256)], acceptedKeys: keepsOldKey ? old.keys : [])
        let (agentKey, userKey) = (PrivateKey.generate(.es256), PrivateKey.generate(.es256))
        let (agent, user) = (DID.key(agentKey.publicKey), DID.key(userKey.publicKey))
        var client = ClientHandshake(did: agent, key: agentKey, expectedServer: serverDID)
        var (srv, m2) = try ServerHandshake.begin(request: try client.makeRequest(now: now), id: "h1", identity: old, policy: policy, registeredKey: nil, now: now)
        #expect(srv.serverKeyID == old.keys[0].publicKey.thumbprint)
        _ = try client.receiveIdentityResult(try srv.receiveIdentityProof(try client.receiveResponse(m2, now: now), policy: policy, now: now), now: now)
        let credential = try await UserCredential.issue(user: user, key: userKey, client: agent, scopes: ["goods:read"], validFor: 7200, now: now)
        let request = try srv.receiveScopeRequest(
            try client.makeScopeRequest(scopes: ["goods:read"], ttl: 600, credential: credential, context: "shop", now: now), policy: policy, now: now)
        let claims = try await UserCredential.verify(credential, userKey: userKey.publicKey, client: agent, server: serverDID, now: now)
        let m6 = try #require(try srv.authorize(request, credential: claims, clientInfo: ClientInfo(name: "a", developer: "d"), policy: policy, now: now))
        try srv.receiveConfirmation(try UserConfirmation.answer(m6, approvedScopes: ["goods:read"], key: userKey, now: now), userKey: userKey.publicKey, now: now)
        // The handshake continues on an instance that rotated (stored and reloaded, as there).
        var reloaded = try JSONValue.parse(try CanonicalJSON.bytes(of: srv)).decode(ServerHandshake.self)
        let signer = try await JWTCodec(key: rotated.tokenKey)
        if keepsOldKey {
            let completion = try await reloaded.complete(policy: policy, tokenSigner: signer, identity: rotated, now: now)
            let grant = try client.receiveOutcome(completion.outcome, now: now)
            #expect(grant.scopesGranted == ["goods:read"])
        } else {
            await #expect(throws: ATHError.self) { try await reloaded.complete(policy: policy, tokenSigner: signer, identity: rotated, now: now) }
            #expect(reloaded.state == .failed)
            #expect(reloaded.outcome == nil)
        }
    }

    @Test func refusesRelayedServerSignature() throws {
        let identity = server()
        let key = PrivateKey.generate()
        var a = ClientHandshake(did: DID.key(key.publicKey), key: key)
        var b = ClientHandshake(did: DID.key(key.publicKey), key: key)
        let m1a = try a.makeRequest(now: now)
        _ = try b.makeRequest(now: now)
        let (_, m2a) = try ServerHandshake.begin(request: m1a, id: "h", identity: identity, policy: policy, registeredKey: nil, now: now)
        // The response to A's session, relayed into B's: the signature covers A's transcript.
        #expect(throws: ATHError.self) { try b.receiveResponse(m2a, now: now) }
        #expect(b.state == .failed)
    }

    @Test func refusesTamperedOffer() throws {
        let identity = server([.es256, .edDSA])
        let key = PrivateKey.generate()
        var client = ClientHandshake(did: DID.key(key.publicKey), key: key)
        guard case .object(var m1) = try client.makeRequest(now: now) else { return }
        m1["capabilities"] = ["ES256"]  // an attacker strips EdDSA to force the weaker choice
        let (_, m2) = try ServerHandshake.begin(request: .object(m1), id: "h", identity: identity, policy: policy, registeredKey: nil, now: now)
        #expect { try client.receiveResponse(m2, now: now) } throws: { ($0 as? ATHError)?.code == .invalidSignature }
    }

    @Test func refusesForgedIdentityProof() throws {
        let identity = server()
        let key = PrivateKey.generate()
        var client = ClientHandshake(did: DID.key(key.publicKey), key: key)
        var (srv, m2) = try ServerHandshake.begin(request: client.makeRequest(now: now), id: "h", identity: identity, policy: policy, registeredKey: nil, now: now)
        guard case .object(var m3) = try client.receiveResponse(m2, now: now) else { return }
        m3["signature"] = .string(try SigningInput(.clientIdentity, client: client.did, server: serverDID, transcriptHash: Data(count: 32)).sign(with: key))
        #expect { try srv.receiveIdentityProof(.object(m3), policy: policy, now: now) } throws: { ($0 as? ATHError)?.code == .invalidSignature }
        #expect(srv.state == .failed && srv.transcript.messages.isEmpty)
        // A failed handshake stays failed, whatever comes next.
        #expect(throws: ATHError.self) { try srv.receiveIdentityProof(.object(m3), policy: policy, now: now) }
    }

    @Test(arguments: [-301, 301])
    func refusesStaleOrFutureTimestamp(offset: Int) throws {
        let key = PrivateKey.generate()
        var client = ClientHandshake(did: DID.key(key.publicKey), key: key)
        let m1 = try client.makeRequest(now: now.addingTimeInterval(TimeInterval(offset)))
        #expect {
            try ServerHandshake.begin(request: m1, id: "h", identity: server(), policy: policy, registeredKey: nil, now: now)
        } throws: { ($0 as? ATHError)?.code == .timestampOutOfRange }
    }

    @Test func refusesKeyThatIsNotTheDIDs() throws {
        let key = PrivateKey.generate()
        var client = ClientHandshake(did: DID.key(PrivateKey.generate().publicKey), key: key)
        let m1 = try client.makeRequest(now: now)
        #expect {
            try ServerHandshake.begin(request: m1, id: "h", identity: server(), policy: policy, registeredKey: nil, now: now)
        } throws: { ($0 as? ATHError)?.code == .keyMismatch }
        var registered = ClientHandshake(did: try DID("did:ath:bot"), key: key)
        #expect {
            try ServerHandshake.begin(
                request: registered.makeRequest(now: now), id: "h", identity: server(), policy: policy,
                registeredKey: PrivateKey.generate().publicKey, now: now)
        } throws: { ($0 as? ATHError)?.code == .keyMismatch }
    }

    @Test func refusesUnsupportedVersionAndAlgorithm() throws {
        let key = PrivateKey.generate()
        var old = ClientHandshake(did: DID.key(key.publicKey), key: key, versions: ["0.0"])
        #expect {
            try ServerHandshake.begin(request: old.makeRequest(now: now), id: "h", identity: server(), policy: policy, registeredKey: nil, now: now)
        } throws: { ($0 as? ATHError)?.code == .unsupportedVersion }
        var rsa = ClientHandshake(did: DID.key(key.publicKey), key: key, capabilities: ["RS256"])
        #expect {
            try ServerHandshake.begin(request: rsa.makeRequest(now: now), id: "h", identity: server(), policy: policy, registeredKey: nil, now: now)
        } throws: { ($0 as? ATHError)?.code == .unsupportedAlgorithm }
    }

    @Test func refusesOutOfOrderSteps() throws {
        let key = PrivateKey.generate()
        var client = ClientHandshake(did: DID.key(key.publicKey), key: key)
        #expect { try client.makeScopeRequest(scopes: ["a"], ttl: 1, credential: "x", context: "", now: now) } throws: {
            ($0 as? ATHError)?.code == .unexpectedMessage
        }
        var (srv, m2) = try ServerHandshake.begin(request: client.makeRequest(now: now), id: "h", identity: server(), policy: policy, registeredKey: nil, now: now)
        let m3 = try client.receiveResponse(m2, now: now)
        _ = try srv.receiveIdentityProof(m3, policy: policy, now: now)
        #expect { try srv.receiveIdentityProof(m3, policy: policy, now: now) } throws: { ($0 as? ATHError)?.code == .unexpectedMessage }
        #expect(srv.state == .awaitingScopeRequest)  // a repeated step changes nothing
    }

    @Test func refusesMessageOfAnotherType() throws {
        let key = PrivateKey.generate()
        var client = ClientHandshake(did: DID.key(key.publicKey), key: key)
        guard case .object(var m1) = try client.makeRequest(now: now) else { return }
        m1["type"] = "identity_proof"
        #expect {
            try ServerHandshake.begin(request: .object(m1), id: "h", identity: server(), policy: policy, registeredKey: nil, now: now)
        } throws: { ($0 as? ATHError)?.code == .malformedMessage }
    }
}

@Suite struct AccountTypePolicyTests {
    let policy = ServerPolicy(scopesSupported: ["a", "b"], accountTypes: ["read": ["a"]])

    @Test func typesLimitScopesAndUnknownTypesAllowNothing() {
        #expect(policy.accountTypeDenial(of: "a", type: "read", party: "agent") == nil)
        #expect(policy.accountTypeDenial(of: "b", type: "read", party: "agent")?.contains("does not allow") == true)
        #expect(policy.accountTypeDenial(of: "a", type: nil, party: "agent") == nil)
        // A type the policy no longer knows fails closed.
        #expect(policy.accountTypeDenial(of: "a", type: "gone", party: "user")?.contains("unknown") == true)
        // A service without types limits nobody.
        #expect(ServerPolicy(scopesSupported: ["a"]).accountTypeDenial(of: "a", type: "read", party: "agent") == nil)
    }
}
