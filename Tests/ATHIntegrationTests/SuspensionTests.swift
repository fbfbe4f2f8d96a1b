import ATHAgent
import ATHCore
import ATHServer
import ATHStore
import Foundation
import Hummingbird
import ShoppingExample
import Synchronization
import Testing

/// An admin suspending an agent's account, and revocations reaching other instances.
@Suite struct SuspensionTests {
    static let token = "suspension-admin-token"

    func startAdmin(_ h: Harness) async throws -> (RunningServer, ATHAdminClient) {
        let router = Router(context: ATHRequestContext.self)
        AdminRoutes<ATHRequestContext>(service: h.service, adminToken: Self.token).register(on: router)
        let server = try await RunningServer.start(router)
        return (server, ATHAdminClient(baseURL: server.baseURL, adminToken: Self.token))
    }

    @Test(arguments: Backend.available) func suspendingAnAgentEndsItsGrantsAndRefusesNewHandshakes(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        try await h.registerParties()
        let (server, admin) = try await startAdmin(h)
        let first = try await h.handshake()
        let second = try await h.handshake(scopes: ["goods:read"])
        // Another agent of the same user is not touched.
        let otherKey = PrivateKey.generate()
        let otherDID = DID.key(otherKey.publicKey)
        let other = try await h.handshake(
            credential: try await h.credential(client: otherDID),
            client: ATHClient(baseURL: h.server.baseURL, did: otherDID, key: otherKey, expectedServer: ShoppingPlatform.did))
        #expect(try await first.get("/api/goods").status == 200)

        let (account, ended) = try await admin.suspend(h.agent.value)
        #expect(account.suspendedAt != nil)
        #expect(Set(ended) == Set([await first.grant.grantID, await second.grant.grantID]))
        // At once on this instance.
        await #expect { try await first.get("/api/goods") } throws: { ATHError.code($0) == .tokenRevoked }
        await #expect { try await second.get("/api/goods") } throws: { ATHError.code($0) == .tokenRevoked }
        #expect(try await other.get("/api/goods").status == 200)
        // No new handshake: refused at step 3, its first write, with the documented error, and
        // nothing is stored.
        await #expect { try await h.handshake() } throws: {
            let e = $0 as? ATHError
            return e?.code == .accountSuspended && e?.step == 3 && e?.httpStatus == 403
        }
        #expect(try await h.store.credentials(userDID: h.user.value, now: Freshness.unix(Date())).allSatisfy { $0.active_grants <= 1 })
        // Suspending again keeps the first time and ends nothing more.
        let again = try await admin.suspend(h.agent.value)
        #expect(again.account.suspendedAt == account.suspendedAt && again.endedGrants.isEmpty)

        // Reinstated: new handshakes work; the ended grants stay ended.
        #expect(try await admin.reinstate(h.agent.value).suspendedAt == nil)
        #expect(try await h.handshake().get("/api/goods").status == 200)
        await #expect { try await first.get("/api/goods") } throws: { ATHError.code($0) == .tokenRevoked }
        let events = try await h.store.auditEvents(limit: 200).map(\.event)
        #expect(events.contains { $0.event == "account.suspend" && $0.actor == "admin" && $0.subject == h.agent.value })
        #expect(events.contains { $0.event == "account.reinstate" && $0.actor == "admin" })
        await #expect { try await admin.suspend("did:ath:nobody") } throws: { ATHError.code($0) == .accountNotFound }
        await server.stop()
        await h.stop()
    }

    /// An admin revokes a grant (all its tokens) or a single token; the agent is refused at once.
    @Test(arguments: Backend.available) func anAdminRevokesAGrantOrAToken(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        try await h.registerParties()
        let (server, admin) = try await startAdmin(h)
        let first = try await h.handshake()
        let second = try await h.handshake()
        let jti = try JWTCodec.unverifiedClaims(of: await second.grant.accessToken, as: AccessTokenClaims.self, error: .tokenInvalid).jti
        try await admin.revokeToken(jti)
        await #expect { try await second.get("/api/goods") } throws: { ATHError.code($0) == .tokenRevoked }
        #expect(try await first.get("/api/goods").status == 200)
        try await admin.revokeGrant(await first.grant.grantID)
        await #expect { try await first.get("/api/goods") } throws: { ATHError.code($0) == .tokenRevoked }
        await #expect { try await admin.revokeGrant("no-such-grant") } throws: { ATHError.code($0) == .notFound }
        await #expect { try await admin.revokeToken("no-such-token") } throws: { ATHError.code($0) == .notFound }
        let events = try await h.store.auditEvents(limit: 200).map(\.event)
        #expect(events.contains { $0.event == "token.revoke" && $0.subject == jti && $0.actor == "admin" })
        #expect(events.contains { $0.event == "grant.revoke" && $0.actor == "admin" })
        await server.stop()
        await h.stop()
    }

    /// Suspended while the user is being asked: the user's approval grants nothing.
    @Test(arguments: Backend.available) func anAgentSuspendedDuringConfirmationGetsNothing(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        try await h.registerParties()
        let (server, admin) = try await startAdmin(h)
        let credential = try await h.credential()
        let agent = Task {
            try await h.client.handshake(credential: credential, scopes: ["goods:read"], ttl: 3600, context: "t", confirmationWait: .seconds(20))
        }
        var pending: [AuthorizationConfirmationRequest] = []
        for _ in 0..<100 where pending.isEmpty {
            pending = try await h.userClient.pending()
            if pending.isEmpty { try await Task.sleep(for: .milliseconds(50)) }
        }
        let request = try #require(pending.first)
        #expect(try await admin.suspend(h.agent.value).endedGrants.isEmpty)
        _ = try? await h.userClient.answer(request, approve: nil)
        await #expect { try await agent.value } throws: { ATHError.code($0) == .accountSuspended }
        #expect(try await h.store.credentials(userDID: h.user.value, now: Freshness.unix(Date())).allSatisfy { $0.grants == 0 })
        await server.stop()
        await h.stop()
    }

    /// The store itself refuses to write a grant for a suspended party, whatever the caller checked.
    @Test(arguments: Backend.available) func theStoreRefusesAGrantForASuspendedParty(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        try await h.registerParties()
        let (id, stored, handshake, completion) = try await EndToEndTests.approvedCompletion(h)
        _ = try await h.store.suspendAccount(did: h.user.value, now: Freshness.unix(Date()), audit: { _ in [] })
        await #expect {
            try await h.store.updateHandshake(
                handshake, expectedRevision: stored.revision, completion: completion, sealedProofKey: Data([1]), audit: [])
        } throws: { ATHError.code($0) == .accountSuspended }
        #expect(try await h.store.grant(id: completion.grant.id) == nil)
        #expect(try await h.store.handshake(id: id)?.revision == stored.revision)
        await h.stop()
    }

    /// Another instance on the same store sees a revocation once its status cache (2 s) runs out:
    /// well within the 5 s the product promises.
    @Test(arguments: Backend.available) func aRevocationReachesAnotherInstanceWithinTheStatusCache(_ backend: Backend) async throws {
        let key = PrivateKey.generate()
        let h = try await Harness.start(serverKey: key, backend: backend)
        try await h.registerParties()
        let session = try await h.handshake()
        let offset = Mutex<TimeInterval>(0)
        let other = try await ATHService(
            identity: ServerIdentity(did: ShoppingPlatform.did, keys: [key]), policy: ShoppingPlatform.policy, store: h.store,
            clock: { Date().addingTimeInterval(offset.withLock { $0 }) })
        func onOther() async throws -> VerifiedAccess {
            let headers = await session.authHeaders("GET", "/api/goods", Data())
            return try await other.authorize(
                ATHService.RequestFacts(
                    method: "GET", target: "/api/goods", authorization: headers[0].1, proof: headers[1].1, body: [], remoteAddress: "127.0.0.1"),
                scope: "goods:read")
        }
        #expect(try await onOther().grant.id == (await session.grant.grantID))
        _ = try await h.service.suspendAccount(h.agent.value, by: "test")
        // This instance at once; the other one still answers from its cache ...
        await #expect { try await session.get("/api/goods") } throws: { ATHError.code($0) == .tokenRevoked }
        // ... until the cache's time is up.
        offset.withLock { $0 = ATHService.statusCacheSeconds + 0.01 }
        await #expect { try await onOther() } throws: { ATHError.code($0) == .tokenRevoked }
        #expect(ATHService.statusCacheSeconds <= 5)
        await h.stop()
    }
}
