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

    /// The server key rotates across instances without ending sessions, in the three phases of
    /// docs/OPERATIONS.md ("Rotating the server key"): every instance accepts the new key (a);
    /// then signs with it and accepts the old one (b), admitting sessions made under either, and
    /// a handshake may be finished by an instance of the other phase; once the old key is
    /// dropped (c), only what it signed is refused.
    @Test(arguments: Backend.available) func theServerKeyRotatesWithoutEndingSessions(_ backend: Backend) async throws {
        let (old, new) = (PrivateKey.generate(), PrivateKey.generate())
        let a = try await Harness.start(serverKey: old, acceptedKeys: [new], backend: backend)
        try await a.registerParties()
        let before = try await a.handshake(scopes: ["goods:read"])
        func reply(_ instance: Harness, _ session: ATHSession) async throws -> HardeningTests.Reply {
            let headers = await session.authHeaders("GET", "/api/goods", Data())
            return try await HardeningTests.send(instance.server.baseURL, .GET, "/api/goods", headers: headers)
        }
        let storeB = try await a.reopenedStore()
        let b = try await Harness.start(serverKey: new, acceptedKeys: [old], store: storeB)
        #expect(try await reply(b, before).status == 200)
        // The agent and the user (a's parties, in the shared store) run a handshake through b.
        let after = try await b.handshake(
            scopes: ["goods:read"], credential: try await a.credential(), userKey: a.userKey,
            client: ATHClient(baseURL: b.server.baseURL, did: a.agent, key: a.agentKey, expectedServer: ShoppingPlatform.did))
        #expect(try await reply(b, after).status == 200)
        #expect(try await reply(a, before).status == 200)

        let storeC = try await a.reopenedStore()
        let c = try await Harness.start(serverKey: new, store: storeC)
        #expect(try await reply(c, after).status == 200)
        let refused = try await reply(c, before)
        #expect(refused.status == 401 && refused.code == "TOKEN_INVALID", "\(refused)")
        for instance in [b, c] { await instance.stop() }
        for store in [storeB, storeC] { await (store as? PostgresStore)?.close() }
        await a.stop()
    }
}
