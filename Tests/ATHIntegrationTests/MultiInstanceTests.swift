import ATHAgent
import ATHCore
import ATHServer
import ATHStore
import ATHStorePostgres
import Foundation
import ShoppingExample
import Testing

/// Two instances of the example platform (same key, same policy) on one PostgreSQL database, as
/// behind a load balancer: what one admits counts on the other.
@Suite struct MultiInstanceTests {
    static func pair(policy: ServerPolicy) async throws -> (Harness, Harness, name: String) {
        let (url, name) = try await TestPostgres.createDatabase()
        let key = PrivateKey.generate()
        let a = try await Harness.start(policy: policy, serverKey: key, store: try await PostgresStore.open(url: url))
        let b = try await Harness.start(policy: policy, serverKey: key, store: try await PostgresStore.open(url: url))
        return (a, b, name)
    }

    /// A grant's rate limit holds across instances: requests spread over both are counted
    /// together (each instance alone would allow the whole limit).
    @Test(.enabled(if: TestPostgres.available, TestPostgres.skipped)) func aRateLimitHoldsAcrossInstances() async throws {
        var policy = ShoppingPlatform.policy
        policy.restrictions.rate_limit = "5/minute"
        let (a, b, name) = try await Self.pair(policy: policy)
        try await a.registerParties()
        let session = try await a.handshake(scopes: ["goods:read"])
        var statuses: [Int] = []
        for i in 0..<8 {
            // Spaced by more than two sync intervals, so each decision rests on every count
            // made before it: the limit is then exact.
            try await Task.sleep(for: .milliseconds(250))
            let headers = await session.authHeaders("GET", "/api/goods", Data())
            let instance = i % 2 == 0 ? a : b
            statuses.append(try await HardeningTests.send(instance.server.baseURL, .GET, "/api/goods", headers: headers).status)
        }
        #expect(statuses == [200, 200, 200, 200, 200, 429, 429, 429], "\(statuses)")
        await a.stop()
        await b.stop()
        try? await TestPostgres.dropDatabase(name)
    }
}
