import ATHAgent
import ATHCore
import ATHServer
import ATHStore
import Foundation
import GRDB
import Hummingbird
import Testing

/// The audit log: append-only in the store, hash-chained so that edits made around the store show.
@Suite struct AuditLogTests {
    static func event(_ i: Int) -> AuditEvent {
        AuditEvent(at: 1_700_000_000 + Int64(i), event: "test.event", actor: "actor-\(i % 3)", subject: "s\(i)", outcome: "ok")
    }

    /// A store with `count` records and a raw connection to its file, as someone with file access has.
    static func filled(_ count: Int) async throws -> (Harness, DatabaseQueue) {
        let h = try await Harness.start()
        try await h.store.appendAudit((1...count).map(event))
        return (h, try DatabaseQueue(path: h.dir.appendingPathComponent("ath.sqlite").path))
    }

    @Test(arguments: Backend.available) func aWholeHandshakeLeavesAnIntactChain(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        try await h.registerParties()
        let session = try await h.handshake()
        _ = try await session.get("/api/goods")
        let verification = try await AuditChain.verify(h.store, pageSize: 3)
        #expect(verification.intact)
        let records = try await h.store.auditRecords(after: 0, limit: 1_000)
        #expect(verification.verified == Int64(records.count) && records.count >= 5)
        #expect(records.map(\.sequence) == Array(1...Int64(records.count)))
        #expect(verification.headHash == records.last?.hash)
        let events = Set(records.map(\.event.event))
        #expect(events.isSuperset(of: ["handshake.start", "handshake.scope_request", "handshake.user_approved", "grant.create"]))
        await h.stop()
    }

    @Test(arguments: Backend.available) func concurrentAppendsStayChainedWithoutGaps(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<8 {
                group.addTask {
                    for i in 0..<25 { try await h.store.appendAudit([Self.event(task * 100 + i), Self.event(task * 100 + 50 + i)]) }
                }
            }
            try await group.waitForAll()
        }
        let verification = try await AuditChain.verify(h.store, pageSize: 7)
        #expect(verification.intact && verification.verified == 400)
        await h.stop()
    }

    @Test func theStoreRefusesToChangeOrRemoveRecords() async throws {
        let (h, raw) = try await Self.filled(5)
        #expect(throws: DatabaseError.self) { try raw.write { try $0.execute(sql: "UPDATE audit SET outcome = 'denied' WHERE seq = 2") } }
        #expect(throws: DatabaseError.self) { try raw.write { try $0.execute(sql: "DELETE FROM audit WHERE seq = 5") } }
        #expect(try await AuditChain.verify(h.store).verified == 5)
        await h.stop()
    }

    /// Past the triggers (dropped by someone editing the file): each kind of tampering is found,
    /// at the record where it happened.
    @Test(arguments: [
        ("UPDATE audit SET outcome = 'denied' WHERE seq = 4", Int64(4)),
        ("DELETE FROM audit WHERE seq = 3", Int64(3)),
        ("UPDATE audit SET hash = 'x' WHERE seq = 6", Int64(6)),
        // Changed, with a made-up hash to go with it.
        ("UPDATE audit SET actor = 'mallory', hash = 'recomputed' WHERE seq = 5", Int64(5)),
        ("UPDATE audit SET seq = 20 WHERE seq = 8", Int64(8)),
    ])
    func tamperingIsFound(_ sql: String, _ at: Int64) async throws {
        let (h, raw) = try await Self.filled(8)
        try await raw.write { db in
            try db.execute(sql: "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete")
            try db.execute(sql: sql)
        }
        let verification = try await AuditChain.verify(h.store, pageSize: 2)
        #expect(verification.brokenAt == at)
        #expect(verification.headSequence == at - 1 && verification.verified == at - 1)
        #expect(verification.problem?.isEmpty == false)
        await h.stop()
    }

    /// A recomputed chain passes on its own; an anchor kept from before shows the rewrite, and an
    /// anchor past the end shows records cut off.
    @Test func anchorsCatchRewritesAndTruncation() async throws {
        let (h, raw) = try await Self.filled(6)
        let before = try await AuditChain.verify(h.store)
        let anchor = (sequence: before.headSequence, hash: before.headHash)
        #expect(try await AuditChain.verify(h.store, anchor: anchor).intact)

        // Rewrite record 2 and recompute every hash after it, as a careful forger would.
        var records = try await h.store.auditRecords(after: 0, limit: 100)
        records[1].event.outcome = "denied"
        let relinked = try AuditChain.link(records.map(\.event), after: nil)
        try await raw.write { db in
            try db.execute(sql: "DROP TRIGGER audit_no_update")
            for r in relinked {
                try db.execute(
                    sql: "UPDATE audit SET outcome = ?, hash = ? WHERE seq = ?", arguments: [r.event.outcome, r.hash, r.sequence])
            }
        }
        #expect(try await AuditChain.verify(h.store).intact)
        let rewritten = try await AuditChain.verify(h.store, anchor: anchor)
        #expect(rewritten.brokenAt == 6)

        try await raw.write { db in
            try db.execute(sql: "DROP TRIGGER audit_no_delete")
            try db.execute(sql: "DELETE FROM audit WHERE seq >= 5")
        }
        let cut = try await AuditChain.verify(h.store, anchor: (4, relinked[3].hash))
        #expect(cut.intact)
        let truncated = try await AuditChain.verify(h.store, anchor: (6, relinked[5].hash))
        #expect(truncated.brokenAt == 5 && truncated.verified == 4)
        await h.stop()
    }

    /// Admin changes and refused admin calls are recorded too.
    @Test(arguments: Backend.available) func adminActionsAreAudited(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        let router = Router(context: ATHRequestContext.self)
        AdminRoutes<ATHRequestContext>(service: h.service, adminToken: "t").register(on: router)
        let server = try await RunningServer.start(router)
        let admin = ATHAdminClient(baseURL: server.baseURL, adminToken: "t")
        let key = PrivateKey.generate()
        _ = try await admin.register(Account(did: "did:ath:zed", kind: .agent, name: "Zed"), key: key.publicKey)
        _ = try await admin.addAlias("zed@example.com", to: "did:ath:zed")
        _ = try await admin.addKey(PrivateKey.generate().publicKey, to: "did:ath:zed")
        try await admin.revokeKey(of: "did:ath:zed", kid: key.publicKey.thumbprint)
        _ = try? await ATHAdminClient(baseURL: server.baseURL, adminToken: "wrong").account("did:ath:zed")
        await h.service.refusals.flush()
        let events = try await h.store.auditEvents(limit: 100).map(\.event)
        #expect(
            events.filter { $0.actor == "admin" }.map(\.event) == ["account.register", "account.add_alias", "key.add", "key.revoke"])
        #expect(events.contains { $0.event == "admin.refused" && $0.outcome == "ADMIN_AUTHENTICATION_REQUIRED" })
        #expect(try await AuditChain.verify(h.store).intact)
        await server.stop()
        await h.stop()
    }
}
