import ATHAgent
import ATHCore
import ATHStore
import Foundation
import ShoppingExample
import Testing

/// The user's pre-authorizations: seen, listed and revoked by the user; a revoked credential opens
/// no handshake and ends the grants made with it.
@Suite struct CredentialRevocationTests {
    /// A platform with its parties registered, and one credential of the user with its jti.
    static func start() async throws -> (Harness, String, String) {
        let h = try await Harness.start()
        try await h.registerParties()
        let credential = try await h.credential()
        let jti = try JWTCodec.unverifiedClaims(of: credential, as: UserCredentialClaims.self, error: .invalidUserCredential).jti
        return (h, credential, jti)
    }

    @Test func revokingACredentialEndsItsGrantsAndRefusesIt() async throws {
        let (h, credential, jti) = try await Self.start()
        let first = try await h.handshake(credential: credential)
        let second = try await h.handshake(credential: credential)
        let other = try await h.handshake()  // another credential of the same user
        #expect(try await first.get("/api/goods").status == 200)

        let listed = try await h.userClient.credentials()
        let mine = try #require(listed.first { $0.jti == jti })
        #expect(mine.grants == 2 && mine.active_grants == 2 && mine.revoked_at == nil && mine.client_did == h.agent.value)
        #expect(listed.count == 2)

        let ended = try await h.userClient.revokeCredential(jti)
        #expect(Set(ended) == Set([await first.grant.grantID, await second.grant.grantID]))
        // At once on this instance: both sessions refused, the other credential's untouched.
        await #expect { try await first.get("/api/goods") } throws: { ATHError.code($0) == .tokenRevoked }
        await #expect { try await second.get("/api/goods") } throws: { ATHError.code($0) == .tokenRevoked }
        #expect(try await other.get("/api/goods").status == 200)
        // No new handshake with it.
        await #expect { try await h.handshake(credential: credential) } throws: { ATHError.code($0) == .credentialRevoked }
        let after = try #require(try await h.userClient.credentials().first { $0.jti == jti })
        #expect(after.revoked_at != nil && after.active_grants == 0)
        #expect(try await h.store.auditEvents(limit: 100).contains { $0.event.event == "credential.revoke" && $0.event.subject == jti })
        await h.stop()
    }

    /// Revoked while the user is being asked: the answer grants nothing.
    @Test func aCredentialRevokedDuringConfirmationGrantsNothing() async throws {
        let (h, credential, jti) = try await Self.start()
        let agent = Task { try await h.client.handshake(credential: credential, scopes: ["goods:read"], ttl: 3600, context: "t", confirmationWait: .seconds(20)) }
        var pending: [AuthorizationConfirmationRequest] = []
        for _ in 0..<100 where pending.isEmpty {
            pending = try await h.userClient.pending()
            if pending.isEmpty { try await Task.sleep(for: .milliseconds(50)) }
        }
        let request = try #require(pending.first)
        #expect(try await h.userClient.revokeCredential(jti).isEmpty)
        _ = try? await h.userClient.answer(request, approve: nil)
        await #expect { try await agent.value } throws: { ATHError.code($0) == .credentialRevoked }
        await h.stop()
    }

    /// Only the user who issued a credential can revoke it; someone else's attempt changes nothing.
    @Test func anotherUserCannotRevokeIt() async throws {
        let (h, credential, jti) = try await Self.start()
        let session = try await h.handshake(credential: credential)
        let mallory = PrivateKey.generate()
        let intruder = ATHUserClient(baseURL: h.server.baseURL, did: DID.key(mallory.publicKey), key: mallory, server: ShoppingPlatform.did)
        #expect(try await intruder.revokeCredential(jti).isEmpty)
        #expect(try await session.get("/api/goods").status == 200)
        #expect(try await h.handshake(credential: credential).grant.scopesGranted.isEmpty == false)
        await h.stop()
    }

    /// The store itself refuses to write a grant under a revoked credential, whatever the caller
    /// checked: nothing is written, the handshake keeps its revision, and no audit record is added.
    @Test(arguments: Backend.available) func theStoreRefusesAGrantUnderARevokedCredential(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        try await h.registerParties()
        let (id, stored, handshake, completion) = try await EndToEndTests.approvedCompletion(h)
        _ = try await h.store.revokeCredential(
            jti: completion.grant.credentialID, userDID: h.user.value, now: Freshness.unix(Date()), audit: { _ in [] })
        let auditBefore = try await h.store.auditEvents(limit: 10_000).count
        let marker = AuditEvent(at: Freshness.unix(Date()), event: "test.completion", actor: "test", subject: id, outcome: "ok")
        await #expect {
            try await h.store.updateHandshake(
                handshake, expectedRevision: stored.revision, completion: completion, sealedProofKey: Data([1]), audit: [marker])
        } throws: { ATHError.code($0) == .credentialRevoked }
        #expect(try await h.store.grant(id: completion.grant.id) == nil)
        #expect(try await h.store.session(id: completion.session.sessionID) == nil)
        #expect(try await h.store.token(jti: completion.token.jti) == nil)
        #expect(try await h.store.handshake(id: id)?.revision == stored.revision)
        #expect(try await h.store.auditEvents(limit: 10_000).count == auditBefore)
        #expect(try await !h.store.auditEvents(limit: 10_000).contains { $0.event.event == "test.completion" })
        await h.stop()
    }
}
