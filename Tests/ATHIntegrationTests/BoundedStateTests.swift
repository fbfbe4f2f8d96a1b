import ATHAgent
import ATHCore
import ATHServer
import ATHStore
import ATHStoreSQLite
import Foundation
import ShoppingExample
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What the server keeps is bounded: a step 1 is one write, ended handshakes go after the
/// retention period, and agents waiting on a handshake cost nothing until it changes.
@Suite struct BoundedStateTests {
    let now = Date()

    func begun(_ store: any ATHStore, nonce: String) async throws -> (ServerHandshake, Bool) {
        let key = PrivateKey.generate()
        var client = ClientHandshake(did: DID.key(key.publicKey), key: key)
        let identity = ServerIdentity(did: ShoppingPlatform.did, keys: [PrivateKey.generate()])
        let (handshake, _) = try ServerHandshake.begin(
            request: try client.makeRequest(now: now), id: Nonce.generate(), identity: identity, policy: ShoppingPlatform.policy,
            registeredKey: nil, now: now)
        let t = Freshness.unix(now)
        let fresh = try await store.beginHandshake(
            handshake, nonce: nonce, nonceExpiresAt: t + 600, now: t,
            audit: [AuditEvent(at: t, event: "handshake.start", actor: "a", subject: handshake.id, outcome: "ok")])
        return (handshake, fresh)
    }

    /// A handshake's first write (step 3's) refuses a suspended agent itself (ACCOUNT_SUSPENDED,
    /// step 3), rather than the service reading the account first: nothing is written, not even
    /// the nonce.
    @Test(arguments: Backend.available) func theFirstWriteOfASuspendedAgentWritesNothing(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        try await h.registerParties()
        let t = Freshness.unix(now)
        _ = try await h.store.suspendAccount(did: h.agent.value, now: t, audit: { _ in [] })
        let auditBefore = try await h.store.auditEvents(limit: 1_000).count
        var client = ClientHandshake(did: h.agent, key: h.agentKey)
        let (handshake, _) = try ServerHandshake.begin(
            request: try client.makeRequest(now: now), id: Nonce.generate(), identity: h.service.identity, policy: ShoppingPlatform.policy,
            registeredKey: h.agentKey.publicKey, now: now)
        let audit = [AuditEvent(at: t, event: "handshake.start", actor: "a", subject: handshake.id, outcome: "ok")]
        await #expect {
            try await h.store.beginHandshake(handshake, nonce: "hs1:suspended", nonceExpiresAt: t + 600, now: t, audit: audit)
        } throws: { error in
            let error = error as? ATHError
            return error?.code == .accountSuspended && error?.step == 3
        }
        #expect(try await h.store.handshake(id: handshake.id) == nil)
        #expect(try await h.store.auditEvents(limit: 1_000).count == auditBefore)
        // The nonce was not used: once reinstated, the same handshake is written.
        try await h.store.reinstateAccount(did: h.agent.value, audit: [])
        #expect(try await h.store.beginHandshake(handshake, nonce: "hs1:suspended", nonceExpiresAt: t + 600, now: t, audit: audit))
        await h.stop()
    }

    @Test(arguments: Backend.available) func theFirstWriteIsOneTransactionAndAReplayWritesNothing(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        let (first, fresh) = try await begun(h.store, nonce: "hs1:n")
        #expect(fresh)
        #expect(try await h.store.handshake(id: first.id) != nil)
        let (second, replayed) = try await begun(h.store, nonce: "hs1:n")
        #expect(!replayed)
        #expect(try await h.store.handshake(id: second.id) == nil)
        let records = try await h.store.auditRecords(after: 0, limit: 100)
        #expect(records.count == 1 && records[0].event.subject == first.id)
        await h.stop()
    }

    /// Handshakes that ended without a grant are deleted after the retention period, with the
    /// expired single-use values; a completed one stays with its grant, and so does the audit.
    @Test(arguments: Backend.available) func endedHandshakesArePurgedAfterRetention(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        try await h.registerParties()
        let session = try await h.handshake(scopes: ["goods:read"])
        let completed = await session.grant.handshakeID
        var (failed, _) = try await begun(h.store, nonce: "hs1:failed")
        failed.fail(ATHError(.invalidSignature, "x", step: 3))
        let stored = try #require(try await h.store.handshake(id: failed.id))
        try await h.store.updateHandshake(failed, expectedRevision: stored.revision, completion: nil, sealedProofKey: nil, audit: [])
        let (abandoned, _) = try await begun(h.store, nonce: "hs1:abandoned")
        _ = try await h.store.consumeNonce("user-req:old", expiresAt: Freshness.unix(now) - 10, now: Freshness.unix(now) - 20)
        let auditBefore = try await h.store.auditRecords(after: 0, limit: 1_000).count

        // Within the retention period nothing goes.
        let early = try await h.store.purge(handshakesEndedBefore: Freshness.unix(now) - 3600, now: Freshness.unix(now))
        #expect(early.handshakes == 0)
        #expect(try await h.store.handshake(id: failed.id) != nil)
        // Past it (deadlines are at most 600 s ahead), both ended ones go; the completed one stays.
        let later = Freshness.unix(now) + 7200
        let purged = try await h.store.purge(handshakesEndedBefore: later - 3600, now: later)
        #expect(purged.handshakes == 2)
        #expect(try await h.store.handshake(id: failed.id) == nil)
        #expect(try await h.store.handshake(id: abandoned.id) == nil)
        #expect(try await h.store.handshake(id: completed) != nil)
        #expect(purged.nonces >= 3)  // the step-1 nonces and the expired user-request one
        #expect(try await session.get("/api/goods").status == 200)
        #expect(try await h.store.auditRecords(after: 0, limit: 1_000).count == auditBefore)
        await h.stop()
    }

    /// A completed handshake is stored without its transcript. A grant that ended (revoked, or
    /// expired) goes after the retention period with its session, token and handshake, and its
    /// audit records stay; a grant in force stays whole, however old.
    @Test(arguments: Backend.available) func endedGrantsGoAfterRetentionAndTheirAuditStays(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        try await h.registerParties()
        let live = try await h.handshake(scopes: ["goods:read"])
        let revoked = try await h.handshake(scopes: ["goods:read"])
        let (kept, ended) = (await live.grant, await revoked.grant)
        #expect(try await h.store.handshake(id: ended.handshakeID)?.handshake.transcript.messages.isEmpty == true)
        #expect(try await h.store.handshake(id: ended.handshakeID)?.handshake.outcome != nil, "the agent's result stays")
        let jti = try JWTCodec.unverifiedClaims(of: ended.accessToken, as: AccessTokenClaims.self, error: .tokenInvalid).jti
        let t = Freshness.unix(Date())
        #expect(try await h.store.revokeGrant(id: ended.grantID, now: t, audit: []))
        let auditBefore = try await h.store.auditRecords(after: 0, limit: 1_000).count
        #expect(try await h.store.purge(handshakesEndedBefore: t - 3600, now: t).grants == 0)
        #expect(try await h.store.grant(id: ended.grantID) != nil)

        let purged = try await h.store.purge(handshakesEndedBefore: t + 1, now: t)
        #expect(purged.grants == 1 && purged.handshakes == 1, "\(purged)")
        #expect(try await h.store.grant(id: ended.grantID) == nil)
        #expect(try await h.store.session(id: ended.secrets.sessionID) == nil)
        #expect(try await h.store.token(jti: jti) == nil)
        #expect(try await h.store.handshake(id: ended.handshakeID) == nil)
        #expect(try await h.store.grant(id: kept.grantID) != nil)
        #expect(try await live.get("/api/goods").status == 200)
        #expect(try await h.store.auditRecords(after: 0, limit: 1_000).count == auditBefore)
        let created = try await h.store.auditRecords(after: 0, limit: 1_000).filter { $0.event.subject == ended.grantID }
        #expect(created.first?.event.detail.contains("credential=") == true, "the audit names the credential that authorized it")

        // Expired a retention period ago: the live grant goes too.
        let later = try await h.store.purge(handshakesEndedBefore: kept.grantExpiresAt + 1, now: t)
        #expect(later.grants == 1)
        #expect(try await h.store.grant(id: kept.grantID) == nil)
        await h.stop()
    }

    /// An agent's long poll is woken by the user's answer, not by reading the store on a
    /// timer: with the look at the store set to once a minute, the answer still arrives at once.
    @Test(arguments: Backend.available) func aLongPollIsWokenByTheAnswer(_ backend: Backend) async throws {
        var retention = ATHService.Retention()
        retention.pollInterval = .seconds(60)
        let h = try await Harness.start(retention: retention, backend: backend)
        try await h.registerParties()
        let (_, id) = try await HardeningTests.awaitingConfirmation(h)
        let waiting = Task { try await HardeningTests.send(h.server.baseURL, .GET, "/ath/handshake/\(id)/result?wait=25") }
        try await Task.sleep(for: .milliseconds(300))
        let request = try #require(try await h.userClient.pending().first)
        let answered = ContinuousClock.now
        _ = try await h.userClient.answer(request, approve: ["goods:read"])
        let reply = try await waiting.value
        #expect(reply.status == 200 && reply.json?["handshake_complete"] != nil)
        #expect(ContinuousClock.now - answered < .seconds(5), "woken \(ContinuousClock.now - answered) after the answer")
        await h.stop()
    }

    /// 500 agents waiting on handshakes: the CPU they cost while nothing happens is printed
    /// (docs/RELIABILITY.md), and every one of them is answered when the user decides.
    @Test(arguments: Backend.available) func fiveHundredWaitersCostLittleAndAreAllAnswered(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        try await h.registerParties()
        let (_, id) = try await HardeningTests.awaitingConfirmation(h)
        let (service, handshakeID) = (h.service, id)
        let waiters = (0..<500).map { _ in Task { try await service.result(handshakeID: handshakeID, wait: 25) } }
        try await Task.sleep(for: .seconds(1))
        let cpuBefore = Self.processCPU()
        let wallBefore = ContinuousClock.now
        // Longer than the look at the store every `pollInterval` (5 s), so that one round is in it.
        try await Task.sleep(for: .seconds(6))
        let cpu = Self.processCPU() - cpuBefore
        let wall = ContinuousClock.now - wallBefore
        let seconds = Double(wall.components.seconds) + Double(wall.components.attoseconds) / 1e18
        print("500 waiting long polls: \(String(format: "%.1f", cpu / seconds * 100)) % of one core (whole test process)")
        let request = try #require(try await h.userClient.pending().first)
        _ = try await h.userClient.answer(request, approve: ["goods:read"])
        var complete = 0
        for waiter in waiters {
            if case .complete = try await waiter.value { complete += 1 }
        }
        #expect(complete == 500)
        await h.stop()
    }

    static func processCPU() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }
}
