import ATHAgent
import ATHCore
import ATHServer
import ATHStore
import ATHStorePostgres
import PostgresNIO
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

    /// An agent waiting on one instance is answered as soon as the user answers on another: the
    /// change is pushed. With the fallback look at the store every two minutes, the agent's 20 s
    /// wait would end in CONFIRMATION_TIMEOUT without the push.
    @Test(.enabled(if: TestPostgres.available, TestPostgres.skipped)) func theAgentsWaitEndsWhenAnotherInstanceIsAnswered() async throws {
        var retention = ATHService.Retention()
        retention.pollInterval = .seconds(120)
        let a = try await Harness.start(retention: retention, backend: .postgres)
        let store = try await a.reopenedStore()
        let b = try await Harness.start(serverKey: a.service.identity.keys[0], retention: retention, store: store)
        try await a.registerParties()
        let started = ContinuousClock.now
        // The agent waits on b; the user answers on a (Harness.handshake answers through `self`).
        let session = try await a.handshake(
            scopes: ["goods:read"], client: ATHClient(baseURL: b.server.baseURL, did: a.agent, key: a.agentKey, expectedServer: ShoppingPlatform.did))
        #expect(await session.grant.scopesGranted == ["goods:read"])
        #expect(ContinuousClock.now - started < .seconds(15), "the wait ended by the push, not by the agent's own deadline")
        await b.stop()
        await (store as? PostgresStore)?.close()
        await a.stop()
    }

    /// A rolling upgrade: a newer release applied a schema step this one does not know (a table
    /// and a nullable column, as steps are additive); this release still opens the database and
    /// serves handshakes and requests on it.
    @Test(.enabled(if: TestPostgres.available, TestPostgres.skipped)) func anOlderReleaseRunsOnASchemaANewerOneExtended() async throws {
        let (url, name) = try await TestPostgres.createDatabase()
        let first = try await PostgresStore.open(url: url)
        try await TestPostgres.admin(try #require(TestPostgres.url), database: name) { c in
            for statement in [
                "CREATE TABLE future_feature (id TEXT PRIMARY KEY)", "ALTER TABLE handshake ADD COLUMN future_column TEXT",
                "INSERT INTO ath_schema_migration (name) VALUES ('v99-from-a-newer-release')",
            ] {
                try await c.query(PostgresQuery(unsafeSQL: statement), logger: TestPostgres.logger)
            }
        }
        await first.close()
        let store = try await PostgresStore.open(url: url)
        let h = try await Harness.start(store: store)
        try await h.registerParties()
        let session = try await h.handshake(scopes: ["goods:read"])
        #expect(try await session.get("/api/goods").status == 200)
        await h.stop()
        await TestPostgres.release(store, name: name)
    }

    /// Session channels live in the memory of the instance that attached them; the routing rule
    /// of docs/OPERATIONS.md keeps them there. Through Examples/Instances/nginx.conf as written
    /// (hashing on the ATH-Session header the agent SDK sends), channels of sessions spread over
    /// both instances answer every call, over HTTP and WebSocket. The same balancer without the
    /// rule (round robin) sends a channel's frames to the instance that does not hold it.
    @Test func sessionChannelsStayOnTheInstanceThatAttachedThem() async throws {
        let key = PrivateKey.generate()
        let a = try await Harness.start(serverKey: key)
        let storeB = try await a.reopenedStore()
        let b = try await Harness.start(serverKey: key, store: storeB)
        try await a.registerParties()
        let example = try String(contentsOf: OfficialSDKTests.repository.appendingPathComponent("Examples/Instances/nginx.conf"), encoding: .utf8)
            .replacingOccurrences(of: "127.0.0.1:8441", with: "127.0.0.1:\(a.server.port)")
            .replacingOccurrences(of: "127.0.0.1:8442", with: "127.0.0.1:\(b.server.port)")
        #expect(example.contains("hash $http_ath_session consistent;"))
        let nginx = try await GatewayNginxTests.Nginx(configuration: example, port: try freeLoopbackPort())
        defer { nginx.stop() }
        let agent = ATHClient(baseURL: nginx.baseURL, did: a.agent, key: a.agentKey, expectedServer: ShoppingPlatform.did)

        // Sessions until both instances hold channels (each lands on one by its random id).
        var sessions = 0
        func held() async -> (Int, Int) { (await a.channels.count, await b.channels.count) }
        while sessions < 40 {
            let (onA, onB) = await held()
            if onA > 0 && onB > 0 { break }
            sessions += 1
            let session = try await a.handshake(scopes: ["goods:read"], client: agent)
            let route: ATHSessionChannel.Route = sessions % 2 == 0 ? .http : .webSocket()
            let channel = try await session.openChannel(route)
            for keyword in ["phone", "case", "cable"] {
                let found = try await channel.call("goods.search", ["keyword": .string(keyword)])
                #expect(found["goods"] != nil, "\(found)")
            }
        }
        let (onA, onB) = await held()
        #expect(onA > 0 && onB > 0, "channels of \(sessions) sessions all on one instance")

        // Without the rule: round robin over the same two instances.
        let roundRobin = example.replacingOccurrences(of: "        hash $http_ath_session consistent;\n", with: "")
        #expect(roundRobin != example)
        let plain = try await GatewayNginxTests.Nginx(configuration: roundRobin, port: try freeLoopbackPort())
        defer { plain.stop() }
        let session = try await a.handshake(
            scopes: ["goods:read"], client: ATHClient(baseURL: plain.baseURL, did: a.agent, key: a.agentKey, expectedServer: ShoppingPlatform.did))
        let channel = try await session.openChannel(.http)
        var refusals: [ATHError.Code?] = []
        for _ in 0..<4 {
            do {
                _ = try await channel.call("goods.search", ["keyword": "phone"])
            } catch {
                refusals.append(ATHError.code(error))
            }
        }
        #expect(refusals.contains(.channelNotFound), "round robin: \(refusals)")
        await b.stop()
        await a.stop()
    }
}
