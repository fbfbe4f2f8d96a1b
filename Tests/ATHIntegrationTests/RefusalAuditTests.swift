import ATHCore
import ATHServer
import ATHStore
import Foundation
import Testing

@Suite struct RefusalAuditTests {
    /// Refused requests are in the audit log once the queue drains, with the hash chain intact:
    /// one record per source and reason, counting its refusals and naming a few of their targets.
    @Test(arguments: Backend.available) func refusedRequestsAreAudited(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        let sources = ["192.0.2.7"] + (1...3).map { "198.51.100.\($0)" }
        for (n, source) in sources.enumerated() {
            for i in 0..<(n == 0 ? 20 : 1) {
                let facts = ATHService.RequestFacts(
                    method: "GET", target: "/api/goods?n=\(i)", authorization: "Bearer not-a-token", proof: nil, body: [],
                    remoteAddress: source)
                await #expect { try await h.service.authorize(facts, scope: "goods:read") } throws: { ATHError.code($0) == .tokenInvalid }
            }
        }
        await h.service.refusals.flush()
        let records = try await h.store.auditEvents(limit: 100)
        let refused = records.filter { $0.event.event == "access.refused" }
        #expect(refused.map(\.event.actor) == sources, "one record per source, in the order they were first refused")
        #expect(refused.allSatisfy { $0.event.outcome == "TOKEN_INVALID" })
        let flood = refused[0].event
        #expect(flood.subject == "GET /api/goods?n=0")
        #expect(flood.detail.hasPrefix("count=20 last_at="), "\(flood.detail)")
        #expect(flood.detail.contains("targets=GET /api/goods?n=0 | GET /api/goods?n=1 | GET /api/goods?n=2 | GET /api/goods?n=3 | …"))
        #expect(refused.dropFirst().allSatisfy { !$0.event.detail.hasPrefix("count=") }, "a single refusal reads as before")
        var previous = ""
        for record in records {
            #expect(try AuditChain.hash(previous: previous, event: record.event) == record.hash)
            previous = record.hash
        }
        await h.stop()
    }

    /// A flood from one source costs one record a window, not one per request: 5,000 refusals
    /// over three windows are at most a few records, whose counts add up to 5,000.
    @Test func aFloodIsOneRecordAWindow() async throws {
        let h = try await Harness.start()
        let audit = RefusalAudit(store: h.store, window: .milliseconds(100))
        for i in 0..<5_000 {
            audit.record(AuditEvent(at: 1_000 + Int64(i / 2_000), event: "access.refused", actor: "203.0.113.9", subject: "GET /x", outcome: "TOKEN_MISSING"))
            if i % 2_000 == 1_999 { try await Task.sleep(for: .milliseconds(150)) }
        }
        await audit.flush()
        let records = try await h.store.auditEvents(limit: 10_000).filter { $0.event.event == "access.refused" }
        #expect((1...4).contains(records.count), "\(records.count) records")
        #expect(records.map { Self.count($0.event) }.reduce(0, +) == 5_000)
        await h.stop()
    }

    /// A burst from more sources than the queue holds is not kept in memory: the sources that do
    /// not fit are counted in `audit.dropped` records, and every refusal is stored or counted.
    @Test(arguments: Backend.available) func aBurstOverCapacityIsCountedNotKept(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        let audit = RefusalAudit(store: h.store, capacity: 10, batchSize: 4)
        let burst = 5_000
        for i in 0..<burst {
            audit.record(AuditEvent(at: 1_000, event: "access.refused", actor: "x\(i % 1_000)", subject: "\(i)", outcome: "TOKEN_INVALID"))
        }
        await audit.flush()
        let records = try await h.store.auditEvents(limit: 10_000)
        let stored = records.filter { $0.event.event == "access.refused" }.map { Self.count($0.event) }.reduce(0, +)
        let counted = records.filter { $0.event.event == "audit.dropped" }.compactMap { Int($0.event.outcome) }.reduce(0, +)
        #expect(stored + counted == burst)
        #expect(counted > 0)
        #expect(records.filter { $0.event.event == "access.refused" }.count <= 10)
        await h.stop()
    }

    /// The refusals one record counts.
    static func count(_ event: AuditEvent) -> Int {
        guard event.detail.hasPrefix("count=") else { return 1 }
        return Int(event.detail.dropFirst(6).prefix { $0.isNumber }) ?? 0
    }
}
