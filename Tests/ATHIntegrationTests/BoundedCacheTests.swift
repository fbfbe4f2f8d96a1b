import ATHCore
import ATHStorePostgres
import Foundation
import ShoppingExample
import Testing

@testable import ATHServer

/// The caches of verified tokens, sessions and admitted v0.1 tokens hold at most twice their
/// capacity, keep what is in use, and drop what is not within two turns.
@Suite struct BoundedCacheTests {
    @Test func holdsAtMostTwiceItsCapacity() {
        let cache = BoundedCache<Int, Int>(capacity: 100)
        for i in 0..<1_000 {
            cache.set(i, forKey: i)
            #expect(cache.count <= 200)
        }
        // The newest entries are there; the oldest went whole generations ago.
        #expect((900..<1_000).allSatisfy { cache.value(forKey: $0) == $0 })
        #expect(cache.value(forKey: 0) == nil && cache.value(forKey: 700) == nil)
    }

    @Test func anEntryInUseSurvivesEveryTurn() {
        let cache = BoundedCache<String, Int>(capacity: 10)
        cache.set(1, forKey: "hot")
        cache.set(2, forKey: "cold")
        for i in 0..<1_000 {
            cache.set(i, forKey: "k\(i)")
            if i % 5 == 0 { #expect(cache.value(forKey: "hot") == 1, "lost at \(i)") }
        }
        #expect(cache.value(forKey: "cold") == nil)
    }

    /// With a maximum age, generations turn with time too: an entry unused for two ages goes
    /// even when few new ones arrive.
    @Test func generationsTurnWithAge() async throws {
        let cache = BoundedCache<String, Int>(capacity: 1_000, maxAge: .milliseconds(50))
        cache.set(1, forKey: "a")
        try await Task.sleep(for: .milliseconds(80))
        cache.set(2, forKey: "b")  // "a" is now in the older generation
        try await Task.sleep(for: .milliseconds(80))
        cache.set(3, forKey: "c")  // and now dropped
        #expect(cache.value(forKey: "a") == nil)
        #expect(cache.value(forKey: "b") == 2 && cache.value(forKey: "c") == 3)
        #expect(cache.count == 2)
    }

    @Test func removesWhatItIsTold() {
        let cache = BoundedCache<Int, Int>(capacity: 4)
        for i in 0..<6 { cache.set(i, forKey: i) }  // spread over both generations
        cache.removeAll { $0 % 2 == 0 }
        cache.removeValue(forKey: 5)
        #expect((0..<6).compactMap { cache.value(forKey: $0) } == [1, 3])
    }

    /// The service's session cache follows use: a session not used for two turns of
    /// `statusCacheSeconds` is no longer held (it is read again from the store if it returns).
    @Test func theServiceForgetsSessionsNoLongerUsed() async throws {
        let h = try await Harness.start()
        try await h.registerParties()
        let idle = try await h.handshake(scopes: ["goods:read"])
        #expect(try await idle.get("/api/goods").status == 200)
        #expect(h.service.sessions.count == 1)
        let busy = try await h.handshake(scopes: ["goods:read"])
        for _ in 0..<2 {
            try await Task.sleep(for: .seconds(ATHService.statusCacheSeconds + 0.2))
            #expect(try await busy.get("/api/goods").status == 200)
        }
        #expect(h.service.sessions.count == 1, "only the session in use is held")
        // The forgotten one is read again from the store when it returns.
        #expect(try await idle.get("/api/goods").status == 200)
        #expect(h.service.sessions.count == 2)
        await h.stop()
    }

    /// A live session's cached state holds each text once: the grant's id and DIDs are the
    /// token's own strings, and the token's issuer and audience the server's (the memory per
    /// live session, docs/PERFORMANCE.md). Its tokens' revocations are a short list: a
    /// revocation here outlasts a late read that says otherwise, and past the list's length the
    /// oldest is read from the store again.
    @Test func aLiveSessionHoldsEachTextOnce() async throws {
        let h = try await Harness.start()
        try await h.registerParties()
        let session = try await h.handshake(scopes: ["goods:read"])
        #expect(try await session.get("/api/goods").status == 200)
        let token = try #require(h.service.verifiedTokens.value(forKey: .init("Bearer " + (await session.grant.accessToken))))
        let state = try #require(h.service.sessions.value(forKey: token.claims.sid))
        /// Whether two equal strings share their heap storage (up to 15 bytes a string has none:
        /// it is held inline, and equal is all there is to check).
        func shared(_ a: String, _ b: String) -> Bool {
            guard a == b else { return false }
            guard a.utf8.count > 15 else { return true }
            var (a, b) = (a, b)
            return a.withUTF8 { a in b.withUTF8 { b in a.baseAddress == b.baseAddress } }
        }
        #expect(shared(state.grant.id, token.claims.gid))
        #expect(shared(state.grant.userDID.value, token.claims.sub))
        #expect(shared(state.grant.clientDID.value, token.claims.client_did))
        #expect(shared(token.claims.iss, h.service.identity.did.value))
        #expect(shared(token.claims.aud, h.service.identity.did.value))
        #expect([token.claims.gid, token.claims.client_did, token.claims.iss].allSatisfy { $0.utf8.count > 15 }, "heap strings, as in use")
        // Shared, and still the same values.
        #expect(state.grant == (try await h.store.grant(id: token.claims.gid))?.sharingTexts(of: token.claims))
        #expect(state.grant.userDID.value == token.claims.sub && state.grant.clientDID.value == token.claims.client_did)

        let jti = token.claims.jti
        state.revoke(jti)
        #expect(state.remember(jti, revoked: false) == true, "a revocation here wins over a read that began before it")
        for n in 0..<ATHService.SessionState.knownTokens { _ = state.remember("other-\(n)", revoked: false) }
        #expect(state.knownRevocation(of: jti) == nil, "forgotten past the list's length, read again")
        #expect(state.knownRevocation(of: "other-0") == false)
        await h.stop()
    }

    /// An instance keeps the handshakes it wrote for their next step and runs that step on its
    /// copy without reading the store; a copy that another instance's step made stale decides
    /// nothing. Here step 1 at a writes nothing (its ticket carries the handshake); step 3 at a
    /// writes it and keeps a copy; the same step 3 again at b is refused as out of order; b
    /// completes the handshake with step 5; the same step 5 at a, which a's copy would accept,
    /// finds the revision moved, and the stored handshake refuses it, changing nothing.
    @Test(arguments: Backend.available) func aStaleCopyOfAHandshakeDecidesNothing(_ backend: Backend) async throws {
        var policy = ShoppingPlatform.policy
        policy.requireUserConfirmation = false
        let key = PrivateKey.generate()
        let a = try await Harness.start(policy: policy, serverKey: key, backend: backend)
        try await a.registerParties()
        let storeB = try await a.reopenedStore()
        let b = try await Harness.start(policy: policy, serverKey: key, store: storeB)
        var client = ClientHandshake(did: a.agent, key: a.agentKey, expectedServer: ShoppingPlatform.did)
        let now = Date()
        let start = try await a.service.begin(try client.makeRequest(now: now))
        let id = try #require(start.response["handshake_id"]?.stringValue)
        #expect(try await a.store.handshake(id: id) == nil, "step 1 writes nothing")
        #expect(a.service.writtenHandshakes.value(forKey: id) == nil)
        let m3 = try client.receiveResponse(start.response, now: now)
        _ = try client.receiveIdentityResult(try await a.service.identityProof(handshakeID: id, ticket: start.ticket, m3), now: now)
        #expect(a.service.writtenHandshakes.value(forKey: id)?.revision == 0)
        await #expect { try await b.service.identityProof(handshakeID: id, ticket: start.ticket, m3) } throws: {
            ATHError.code($0) == .unexpectedMessage
        }
        let m5 = try client.makeScopeRequest(scopes: ["goods:read"], ttl: 600, credential: try await a.credential(), context: "shop", now: now)
        guard case .complete(let outcome) = try await b.service.scopeRequest(handshakeID: id, m5) else {
            Issue.record("the handshake did not complete")
            return
        }
        #expect(try client.receiveOutcome(outcome, now: now).scopesGranted == ["goods:read"])
        await #expect { try await a.service.scopeRequest(handshakeID: id, m5) } throws: { ATHError.code($0) == .unexpectedMessage }
        let stored = try #require(try await a.store.handshake(id: id))
        #expect(stored.revision == 1 && stored.handshake.state == .completed, "\(stored.revision) \(stored.handshake.state)")
        #expect(try await a.store.activeGrants(did: a.agent.value, now: Freshness.unix(now)).count == 1)
        #expect(a.service.writtenHandshakes.value(forKey: id) == nil, "a stale copy is dropped")
        await b.stop()
        await (storeB as? PostgresStore)?.close()
        await a.stop()
    }
}
