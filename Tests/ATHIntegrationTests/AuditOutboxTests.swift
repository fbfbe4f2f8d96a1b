import ATHCore
import ATHStore
import ATHStorePostgres
import Foundation
import PostgresNIO
import Testing

/// PostgreSQL's audit records go through an outbox (docs/STORAGE.md, "The audit chain"): written
/// inside the use case's transaction, chained by one chainer at a time.
@Suite(.enabled(if: TestPostgres.available, TestPostgres.skipped)) struct AuditOutboxTests {
    static func count(_ table: String, in database: String) async throws -> Int {
        var n = 0
        try await TestPostgres.admin(try #require(TestPostgres.url), database: database) { c in
            for try await value in try await c.query(PostgresQuery(unsafeSQL: "SELECT count(*) FROM \(table)"), logger: TestPostgres.logger)
                .decode(Int64.self)
            {
                n = Int(value)
            }
        }
        return n
    }

    static func event(_ i: Int) -> AuditEvent {
        AuditEvent(at: 1_800_000_000 + Int64(i), event: "test.event", actor: "test", subject: "s\(i)", outcome: "ok", detail: "d")
    }

    /// The instance's chainer moves appended records into the chain by itself, soon after.
    @Test func theChainerChainsWithoutAReader() async throws {
        let (store, _, name) = try await TestPostgres.openStore()
        try await store.appendAudit((0..<5).map(Self.event))
        var chained = 0
        for _ in 0..<50 where chained < 5 {
            try await Task.sleep(for: .milliseconds(100))
            chained = try await Self.count("audit", in: name)
        }
        #expect(chained == 5)
        #expect(try await Self.count("audit_outbox", in: name) == 0)
        await TestPostgres.release(store, name: name)
    }

    /// A read sees every record committed before it, chained first; and what an instance left
    /// in the outbox (stopped before its chainer ran) is chained by another, in one gapless
    /// chain.
    @Test func aReadChainsWhatAnyInstanceLeft() async throws {
        let (store, url, name) = try await TestPostgres.openStore()
        // A record as an instance leaves it when it stops between its commit and its chainer.
        try await TestPostgres.admin(url, database: name) { c in
            try await c.query(
                "INSERT INTO audit_outbox (at, event, actor, subject, outcome, detail) VALUES (1800000000, 'left.behind', 'gone', 'x', 'ok', '')",
                logger: TestPostgres.logger)
        }
        try await store.appendAudit((1...3).map(Self.event))
        let records = try await store.auditEvents(limit: 10)
        #expect(records.map(\.sequence) == [1, 2, 3, 4])
        #expect(Set(records.map(\.event.event)) == ["left.behind", "test.event"])
        // Events of one transaction stay in their order.
        #expect(records.filter { $0.event.event == "test.event" }.map(\.event.subject) == ["s1", "s2", "s3"])
        let other = try await PostgresStore.open(url: url)
        try await other.appendAudit([Self.event(9)])
        let all = try await other.auditRecords(after: 0, limit: 100)
        #expect(all.map(\.sequence) == [1, 2, 3, 4, 5])
        var verifier = AuditChain.Verifier()
        for record in all { _ = try verifier.check(record) }
        #expect(verifier.finish().intact)
        await other.close()
        await TestPostgres.release(store, name: name)
    }
}
