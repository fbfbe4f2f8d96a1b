import ATHCore
import ATHServer
import ATHStore
import Foundation
import Testing

@Suite struct RefusalAuditTests {
    /// Each refused request is in the audit log once the queue drains, with the hash chain intact.
    @Test(arguments: Backend.available) func refusedRequestsAreAudited(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        for i in 0..<20 {
            let facts = ATHService.RequestFacts(
                method: "GET", target: "/api/goods?n=\(i)", authorization: "Bearer not-a-token", proof: nil, body: [],
                remoteAddress: "192.0.2.7")
            await #expect { try await h.service.authorize(facts, scope: "goods:read") } throws: { ATHError.code($0) == .tokenInvalid }
        }
        await h.service.refusals.flush()
        let records = try await h.store.auditEvents(limit: 100)
        let refused = records.filter { $0.event.event == "access.refused" }
        #expect(refused.count == 20)
        #expect(refused.allSatisfy { $0.event.outcome == "TOKEN_INVALID" && $0.event.actor == "192.0.2.7" })
        #expect(Set(refused.map(\.event.subject)).count == 20)
        var previous = ""
        for record in records {
            #expect(try AuditChain.hash(previous: previous, event: record.event) == record.hash)
            previous = record.hash
        }
        await h.stop()
    }

    /// A burst far over the queue's capacity is not kept in memory: what does not fit is counted
    /// in `audit.dropped` records, and every refusal is either stored or counted.
    @Test(arguments: Backend.available) func aBurstOverCapacityIsCountedNotKept(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        let audit = RefusalAudit(store: h.store, capacity: 10, batchSize: 4)
        let burst = 5_000
        for i in 0..<burst {
            audit.record(AuditEvent(at: 1_000, event: "access.refused", actor: "x", subject: "\(i)", outcome: "TOKEN_INVALID"))
        }
        await audit.flush()
        let records = try await h.store.auditEvents(limit: 10_000)
        let stored = records.filter { $0.event.event == "access.refused" }.count
        let counted = records.filter { $0.event.event == "audit.dropped" }.compactMap { Int($0.event.outcome) }.reduce(0, +)
        #expect(stored + counted == burst)
        #expect(counted > 0)
        #expect(stored < burst)
        await h.stop()
    }
}
