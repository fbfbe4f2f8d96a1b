import ATHAgent
import ATHCore
import ATHServer
import ATHStore
import ATHStoreSQLite
import AsyncHTTPClient
import Crypto
import Foundation
import NIOCore
import ShoppingExample
import Testing

@Suite struct EndToEndTests {
    @Test func shoppingScenarioRunsAsTheSeedDescribes() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ath-demo-\(UUID().uuidString).sqlite").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try await ShoppingScenario(storePath: path) { _ in }.run()
        #expect(result.grant.scopesGranted == ["goods:read", "order:create"])
        // Two hours, less the seconds between issuing the credential and the grant: a grant
        // never outlives the user's pre-authorization.
        #expect((7190...7200).contains(result.grant.ttlGranted))
        #expect(result.grant.restrictions.rate_limit == "100/minute")
        #expect(result.grant.restrictions.order_amount_limit == 5000)
        #expect(result.goodsStatus == 200)
        #expect(result.orderStatus == 201)
        #expect(result.overLimitError?.code == .amountLimitExceeded)
        #expect(result.sessionGoodsFound == 3)
        #expect(result.sessionOverLimitError?.code == .amountLimitExceeded)
        #expect(result.ungrantedScopeError?.code == .scopeInsufficient)
        // The assistant came over mutual TLS and the handshake was bound to its certificate's AIC.
        let audit = try await SQLiteStore(path: path).auditRecords(after: 0, limit: 50)
        #expect(audit.contains { $0.event.event == "handshake.start" && $0.event.detail == "aic=\(ShoppingScenario.assistantAIC)" })
    }

    @Test(arguments: Backend.available) func partialApprovalGrantsOnlyWhatTheUserApproved(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        defer { Task { await h.stop() } }
        try await h.registerParties()
        let session = try await h.handshake(approve: ["goods:read"])
        let grant = await session.grant
        #expect(grant.scopesGranted == ["goods:read"])
        #expect(grant.scopesDenied.map(\.scope) == ["order:create"])
        #expect(try await session.get("/api/goods").status == 200)
        await #expect { try await session.post("/api/order", json: ["goods_id": "200", "quantity": 1]) } throws: {
            ATHError.code($0) == .scopeInsufficient
        }
        await h.stop()
    }

    @Test(arguments: Backend.available) func userDenialGrantsNothing(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        try await h.registerParties()
        await #expect { try await h.handshake(approve: []) } throws: { ATHError.code($0) == .userDenied }
        let events = try await h.store.auditEvents(limit: 50)
        #expect(!events.contains { $0.event.event == "grant.create" })
        #expect(events.contains { $0.event.outcome == "USER_DENIED" })
        await h.stop()
    }

    @Test(arguments: Backend.available) func unansweredConfirmationTimesOut(_ backend: Backend) async throws {
        var policy = ShoppingPlatform.policy
        policy.confirmationTimeout = 1
        let h = try await Harness.start(policy: policy, backend: backend)
        try await h.registerParties()
        await #expect { try await h.handshake(answer: false) } throws: { ATHError.code($0) == .confirmationTimeout }
        await h.stop()
    }

    @Test(arguments: Backend.available) func withoutConfirmationTheCredentialSuffices(_ backend: Backend) async throws {
        var policy = ShoppingPlatform.policy
        policy.requireUserConfirmation = false
        let h = try await Harness.start(policy: policy, backend: backend)
        try await h.registerParties()
        let session = try await h.handshake(answer: false)
        #expect(await session.grant.scopesGranted == ["goods:read", "order:create"])
        await h.stop()
    }

    @Test(arguments: Backend.available) func credentialRefusals(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        try await h.registerParties()
        let expired = try await h.credential(validFor: 60, now: Date().addingTimeInterval(-120))
        await #expect { try await h.handshake(credential: expired) } throws: { ATHError.code($0) == .userCredentialExpired }
        let foreign = try await h.credential(client: try DID("did:ath:other_agent"))
        await #expect { try await h.handshake(credential: foreign) } throws: { ATHError.code($0) == .credentialClientMismatch }
        let forged = try await h.credential(key: PrivateKey.generate())
        await #expect { try await h.handshake(credential: forged) } throws: { ATHError.code($0) == .invalidUserCredential }
        let narrow = try await h.credential(scopes: ["goods:read"])
        await #expect { try await h.handshake(credential: narrow) } throws: { ATHError.code($0) == .scopeExceedsCredential }
        await #expect { try await h.handshake(scopes: ["goods:read", "admin:all"]) } throws: { ATHError.code($0) == .scopeNotSupported }
        await h.stop()
    }

    @Test(arguments: Backend.available) func ttlIsCappedAndTokensRenewWithinTheGrant(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        try await h.registerParties()
        let session = try await h.handshake(ttl: 100_000, credential: try await h.credential(validFor: 86_400))
        let before = await session.grant
        #expect(before.ttlGranted == 7200)
        #expect(before.tokenExpiresAt - Int64(Date().timeIntervalSince1970) <= 3600)
        try await session.renew()
        let after = await session.grant
        #expect(after.accessToken != before.accessToken)
        #expect(try await session.get("/api/goods").status == 200)
        await h.stop()
    }

    @Test(arguments: Backend.available) func rateLimitIsEnforced(_ backend: Backend) async throws {
        var policy = ShoppingPlatform.policy
        policy.restrictions.rate_limit = "3/minute"
        let h = try await Harness.start(policy: policy, backend: backend)
        try await h.registerParties()
        let session = try await h.handshake()
        for _ in 0..<3 { #expect(try await session.get("/api/goods").status == 200) }
        await #expect { try await session.get("/api/goods") } throws: { ATHError.code($0) == .rateLimited }
        await h.stop()
    }

    @Test(arguments: Backend.available) func ipAndTimeRestrictionsAreEnforced(_ backend: Backend) async throws {
        var policy = ShoppingPlatform.policy
        policy.restrictions.ip_whitelist = ["10.0.0.0/8"]
        let h = try await Harness.start(policy: policy, backend: backend)
        try await h.registerParties()
        let session = try await h.handshake()
        await #expect { try await session.get("/api/goods") } throws: { ATHError.code($0) == .ipNotAllowed }
        await h.stop()

        var closed = ShoppingPlatform.policy
        let hour = Calendar(identifier: .gregorian).dateComponents(in: TimeZone(identifier: "UTC")!, from: Date()).hour!
        closed.restrictions.access_time = String(format: "%02d:00-%02d:00 UTC", (hour + 2) % 24, (hour + 3) % 24)
        let h2 = try await Harness.start(policy: closed, backend: backend)
        try await h2.registerParties()
        let s2 = try await h2.handshake()
        await #expect { try await s2.get("/api/goods") } throws: { ATHError.code($0) == .outsideAccessTime }
        await h2.stop()
    }

    @Test(arguments: Backend.available) func revokedGrantStopsAtOnce(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        try await h.registerParties()
        let session = try await h.handshake()
        #expect(try await session.get("/api/goods").status == 200)
        try await h.service.revokeGrant(await session.grant.grantID, by: "admin")
        await #expect { try await session.get("/api/goods") } throws: { ATHError.code($0) == .tokenRevoked }
        await h.stop()
    }

    @Test(arguments: Backend.available) func stateSurvivesARestart(_ backend: Backend) async throws {
        let key = PrivateKey.generate()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ath-restart-\(UUID().uuidString)")
        let h = try await Harness.start(storeDir: dir, serverKey: key, backend: backend)
        try await h.registerParties()
        let session = try await h.handshake()
        let grantID = await session.grant.grantID
        await h.server.stop()
        let store = try await h.reopenedStore()
        #expect(try await store.grant(id: grantID)?.scopes == ["goods:read", "order:create"])
        // A new process with the same key and store accepts the token and its proof.
        let restarted = try await ATHService(
            identity: ServerIdentity(did: ShoppingPlatform.did, keys: [key]), policy: ShoppingPlatform.policy, store: store)
        let headers = await session.authHeaders("GET", "/api/goods", Data())
        let facts = ATHService.RequestFacts(
            method: "GET", target: "/api/goods", authorization: headers[0].1, proof: headers[1].1, body: [], remoteAddress: "127.0.0.1")
        #expect(try await restarted.authorize(facts, scope: "goods:read").grant.id == grantID)
        // The store holds the proof key sealed, never in the clear ...
        let sid = await session.grant.secrets.sessionID
        let proofKey = await session.grant.secrets.proofKey.withUnsafeBytes { Data($0) }
        let stored = try #require(try await store.session(id: sid))
        #expect(stored.sealedProofKey.range(of: proofKey) == nil)
        // ... and a server with another key cannot use it: the token fails closed.
        let otherKey = try await ATHService(
            identity: ServerIdentity(did: ShoppingPlatform.did, keys: [key]), policy: ShoppingPlatform.policy, store: store,
            sealer: SecretSealer(key: SymmetricKey(size: .bits256)))
        let again = await session.authHeaders("GET", "/api/goods", Data())
        let facts2 = ATHService.RequestFacts(
            method: "GET", target: "/api/goods", authorization: again[0].1, proof: again[1].1, body: [], remoteAddress: "127.0.0.1")
        await #expect { try await otherKey.authorize(facts2, scope: "goods:read") } throws: { ATHError.code($0) == .tokenInvalid }
        try? FileManager.default.removeItem(at: dir)
        await h.stop()
    }
    /// Steps 1-5 against one instance; the process stops while the user has not answered; a new
    /// process on the same store and key takes the user's answer and completes the handshake.
    @Test(arguments: Backend.available) func halfFinishedHandshakeSurvivesARestart(_ backend: Backend) async throws {
        let key = PrivateKey.generate()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ath-restart-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let h = try await Harness.start(storeDir: dir, serverKey: key, backend: backend)
        try await h.registerParties()
        var client = ClientHandshake(did: h.agent, key: h.agentKey, expectedServer: ShoppingPlatform.did)
        let id = try await Self.stepsOneToFive(&client, h)
        await h.server.stop()

        let store = try await h.reopenedStore()
        let restarted = try await ATHService(
            identity: ServerIdentity(did: ShoppingPlatform.did, keys: [key]), policy: ShoppingPlatform.policy, store: store)
        let server = try await RunningServer.start(ShoppingPlatform.router(service: restarted))
        let userClient = ATHUserClient(baseURL: server.baseURL, did: h.user, key: h.userKey, server: ShoppingPlatform.did)
        let pending = try await userClient.pending()
        #expect(pending.map(\.handshake_id) == [id])
        guard let request = pending.first else { return await server.stop() }
        _ = try await userClient.answer(request, approve: ["goods:read"])
        guard case .complete(let outcome) = try await restarted.result(handshakeID: id, wait: 0) else {
            Issue.record("the answered handshake did not complete")
            return await server.stop()
        }
        let grant = try client.receiveOutcome(outcome, now: Date())
        #expect(grant.scopesGranted == ["goods:read"])
        #expect(try await store.grant(id: grant.grantID)?.scopes == ["goods:read"])
        // The token and its proof work on the new instance.
        let proof = PossessionProof.make(
            key: grant.secrets.proofKey, method: "GET", target: "/api/goods", body: Data(), token: grant.accessToken, now: Date())
        let facts = ATHService.RequestFacts(
            method: "GET", target: "/api/goods", authorization: "Bearer \(grant.accessToken)", proof: proof.headerValue, body: [],
            remoteAddress: "127.0.0.1")
        #expect(try await restarted.authorize(facts, scope: "goods:read").grant.id == grant.grantID)
        await server.stop()
        await h.stop()
    }

    /// A proof used before a restart is not accepted again after it: the replay cache is in
    /// memory, so the new instance refuses proofs dated before it started.
    @Test(arguments: Backend.available) func aProofDoesNotReplayAcrossARestart(_ backend: Backend) async throws {
        let key = PrivateKey.generate()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ath-restart-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let h = try await Harness.start(storeDir: dir, serverKey: key, backend: backend)
        try await h.registerParties()
        let session = try await h.handshake(scopes: ["goods:read"])
        let captured = await session.authHeaders("GET", "/api/goods", Data())
        #expect(try await HardeningTests.send(h.server.baseURL, .GET, "/api/goods", headers: captured).status == 200)
        await h.server.stop()
        try await Task.sleep(for: .milliseconds(1100))  // proofs carry whole seconds

        let store = try await h.reopenedStore()
        let restarted = try await ATHService(
            identity: ServerIdentity(did: ShoppingPlatform.did, keys: [key]), policy: ShoppingPlatform.policy, store: store)
        let server = try await RunningServer.start(ShoppingPlatform.router(service: restarted))
        let replay = try await HardeningTests.send(server.baseURL, .GET, "/api/goods", headers: captured)
        #expect(replay.status == 401 && replay.code == "PROOF_INVALID", "\(replay.status) \(replay.code ?? "-")")
        // A new proof for the same token works.
        let fresh = await session.authHeaders("GET", "/api/goods", Data())
        #expect(try await HardeningTests.send(server.baseURL, .GET, "/api/goods", headers: fresh).status == 200)
        await server.stop()
        await h.stop()
    }

    /// A handshake whose user did not answer before its deadline, while the server was down,
    /// ends with CONFIRMATION_TIMEOUT on the next instance, and no grant exists for it.
    @Test(arguments: Backend.available) func deadlinePassedDuringARestartTimesOut(_ backend: Backend) async throws {
        let key = PrivateKey.generate()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ath-restart-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let h = try await Harness.start(storeDir: dir, serverKey: key, backend: backend)
        try await h.registerParties()
        var client = ClientHandshake(did: h.agent, key: h.agentKey, expectedServer: ShoppingPlatform.did)
        let id = try await Self.stepsOneToFive(&client, h)
        await h.server.stop()

        let store = try await h.reopenedStore()
        let later = Date().addingTimeInterval(Double(ShoppingPlatform.policy.confirmationTimeout + 5))
        let restarted = try await ATHService(
            identity: ServerIdentity(did: ShoppingPlatform.did, keys: [key]), policy: ShoppingPlatform.policy, store: store,
            clock: { later })
        await #expect { _ = try await restarted.result(handshakeID: id, wait: 0) } throws: { ATHError.code($0) == .confirmationTimeout }
        #expect(try await store.handshake(id: id)?.handshake.state == .failed)
        #expect(try await store.handshake(id: id)?.handshake.outcome == nil)
        await h.stop()
    }

    /// Steps 1-5 through the service (no HTTP): returns the handshake id, left waiting for the user.
    static func stepsOneToFive(_ client: inout ClientHandshake, _ h: Harness) async throws -> String {
        let start = try await h.service.begin(client.makeRequest(now: Date()))
        let id = try #require(start.response["handshake_id"]?.stringValue)
        let m4 = try await h.service.identityProof(handshakeID: id, ticket: start.ticket, client.receiveResponse(start.response, now: Date()))
        _ = try client.receiveIdentityResult(m4, now: Date())
        let m5 = try client.makeScopeRequest(
            scopes: ["goods:read", "order:create"], ttl: 3600, credential: try await h.credential(), context: "restart", now: Date())
        guard case .pending = try await h.service.scopeRequest(handshakeID: id, m5) else {
            throw ATHError(.internalError, "the handshake did not wait for the user")
        }
        return id
    }

    /// A handshake through step 5 that the user approved (goods:read), with the completion the
    /// service would write, computed but not written: for tests of what the store itself refuses
    /// at that write.
    static func approvedCompletion(_ h: Harness) async throws
        -> (id: String, stored: StoredHandshake, handshake: ServerHandshake, completion: ServerHandshake.Completion)
    {
        var client = ClientHandshake(did: h.agent, key: h.agentKey, expectedServer: ShoppingPlatform.did)
        let id = try await stepsOneToFive(&client, h)
        let stored = try #require(try await h.store.handshake(id: id))
        var handshake = stored.handshake
        let answer = try UserConfirmation.answer(
            try #require(handshake.confirmation), approvedScopes: ["goods:read"], key: h.userKey, now: Date())
        try handshake.receiveConfirmation(answer, userKey: h.userKey.publicKey, now: Date())
        let identity = h.service.identity
        let signer = try await JWTCodec(key: identity.tokenKey)
        let completion = try await handshake.complete(policy: ShoppingPlatform.policy, tokenSigner: signer, identity: identity, now: Date())
        return (id, stored, handshake, completion)
    }
}
