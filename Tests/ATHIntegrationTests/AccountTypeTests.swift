import ATHAgent
import ATHCore
import ATHServer
import Foundation
import Hummingbird
import ShoppingExample
import Testing

/// Per-service account types (Act Auth): a type names the scopes an account may hold, as agent
/// or as user. The shopping platform has "read" (goods:read) and "read-write".
@Suite struct AccountTypeTests {
    @Test(arguments: Backend.available) func aReadAgentIsGrantedOnlyWhatItsTypeAllows(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        try await h.registerParties()
        _ = try await h.service.setAccountType(h.agent.value, to: "read", by: "test")
        let session = try await h.handshake()
        let grant = await session.grant
        #expect(grant.scopesGranted == ["goods:read"])
        #expect(grant.scopesDenied.map(\.scope) == ["order:create"])
        #expect(grant.scopesDenied.first?.reason.contains("agent's account type 'read'") == true)
        // The user was asked only for what could be granted: the request the handshake sent, as
        // stored with it (a second poller beside the harness's approver could miss it under load).
        let handshakeID = try #require(try await h.store.grant(id: grant.grantID)?.handshakeID)
        #expect(try await h.store.handshake(id: handshakeID)?.handshake.confirmation?.requested_scopes == ["goods:read"])
        await #expect { try await session.post("/api/order", json: ["goods_id": "200", "quantity": 1]) } throws: {
            ATHError.code($0) == .scopeInsufficient
        }
        await h.stop()
    }

    @Test(arguments: Backend.available) func theUsersTypeLimitsWhatTheyCanDelegate(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        try await h.registerParties()
        _ = try await h.service.setAccountType(h.user.value, to: "read", by: "test")
        let grant = await (try await h.handshake()).grant
        #expect(grant.scopesGranted == ["goods:read"])
        #expect(grant.scopesDenied.first?.reason.contains("user's account type 'read'") == true)
        // Nothing left: no grant at all.
        await #expect { try await h.handshake(scopes: ["order:create"]) } throws: { ATHError.code($0) == .noScopesGranted }
        await h.stop()
    }

    /// Lowering a type ends the grants it no longer allows, at once; the others go on.
    @Test(arguments: Backend.available) func loweringATypeEndsGrantsBeyondIt(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        try await h.registerParties()
        let router = Router(context: ATHRequestContext.self)
        AdminRoutes<ATHRequestContext>(service: h.service, adminToken: "admin-token-for-types").register(on: router)
        let server = try await RunningServer.start(router)
        let admin = ATHAdminClient(baseURL: server.baseURL, adminToken: "admin-token-for-types")
        #expect(try await admin.setAccountType(of: h.agent.value, to: "read-write").endedGrants.isEmpty)
        let both = try await h.handshake()
        let readOnly = try await h.handshake(scopes: ["goods:read"])
        let (account, ended) = try await admin.setAccountType(of: h.agent.value, to: "read")
        #expect(account.accountType == "read")
        #expect(ended == [await both.grant.grantID])
        await #expect { try await both.get("/api/goods") } throws: { ATHError.code($0) == .tokenRevoked }
        #expect(try await readOnly.get("/api/goods").status == 200)
        // An unknown type is refused and changes nothing.
        await #expect { try await admin.setAccountType(of: h.agent.value, to: "admin") } throws: { ATHError.code($0) == .malformedMessage }
        await #expect { try await admin.register(Account(did: "did:ath:typed", kind: .agent, name: "T", accountType: "root")) } throws: {
            ATHError.code($0) == .malformedMessage
        }
        await #expect { try await admin.account("did:ath:typed") } throws: { ATHError.code($0) == .accountNotFound }
        #expect(try await admin.account(h.agent.value).accountType == "read")
        // Cleared: no limit.
        #expect(try await admin.setAccountType(of: h.agent.value, to: nil).account.accountType == nil)
        #expect(await (try await h.handshake()).grant.scopesGranted == ["goods:read", "order:create"])
        #expect(try await h.store.auditEvents(limit: 200).contains { $0.event.event == "account.set_type" && $0.event.actor == "admin" })
        await server.stop()
        await h.stop()
    }
}
