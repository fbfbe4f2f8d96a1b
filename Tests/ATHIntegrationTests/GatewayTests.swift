import ATHAgent
import ATHCore
import ATHGateway
import ATHServer
import ATHStore
import AsyncHTTPClient
import Foundation
import Testing

/// `ath gateway`: its configuration (the example in the repository included), start-up errors
/// that name the key, and unchanged services behind the 9-step handshake.
@Suite struct GatewayTests {
    /// A folder holding `yaml` as gateway.yaml, the secret files the example names, and a server key.
    static func folder(_ yaml: String, files: [String: String] = [:]) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ath-gw-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try yaml.write(to: dir.appendingPathComponent("gateway.yaml"), atomically: true, encoding: .utf8)
        let standard = [
            "shop-api-key": "k-123\n", "github-client-secret": "s-456\n", "server-key.pem": PrivateKey.generate().pem,
            "admin-token": String(repeating: "a", count: 40) + "\n",
        ]
        for (name, text) in standard.merging(files, uniquingKeysWith: { _, given in given }) {
            try text.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        return dir
    }

    static var example: String {
        get throws {
            try String(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Examples/Gateway/gateway.yaml"), encoding: .utf8)
        }
    }

    static func load(
        _ yaml: String, overrides: [String] = [], environment: [String: String] = [:], files: [String: String] = [:]
    ) async throws -> GatewayConfiguration {
        try await GatewayConfiguration.load(
            file: try folder(yaml, files: files).appendingPathComponent("gateway.yaml").path, overrides: overrides, environment: environment)
    }

    /// The example configuration on loopback over plain HTTP, its `shop` service at `upstream`
    /// under /plain (the mock's open echo), with `changes` applied after.
    static func loopback(upstream: MockOAuthProvider, port: Int = 0, changes: [(String, String)] = []) throws -> String {
        var yaml = try example
            .replacingOccurrences(of: "host: \"0.0.0.0\"", with: "host: \"127.0.0.1\"")
            .replacingOccurrences(of: "port: 8443", with: "port: \(port)")
            .replacingOccurrences(of: "insecure_http: false", with: "insecure_http: true")
            .replacingOccurrences(of: "http://127.0.0.1:9000", with: upstream.baseURL)
            .replacingOccurrences(of: "- \"GET /goods/** goods:read\"", with: "- \"GET /plain/goods/** goods:read\"")
            .replacingOccurrences(of: "- \"POST /orders order:create\"", with: "- \"POST /plain/orders order:create\"")
            .replacingOccurrences(of: "tls:\n  certificate_file", with: "unused_tls:\n  certificate_file")
        for (find, replace) in changes { yaml = yaml.replacingOccurrences(of: find, with: replace) }
        return yaml
    }

    /// Alice and an assistant registered in the gateway's store, and a handshake at `baseURL`
    /// (the gateway, or a proxy in front of it) that Alice answers with `approve` (nil: all).
    static func handshake(
        _ gateway: Gateway, at baseURL: String, scopes: [String] = ["goods:read", "order:create"], approve: [String]? = nil
    ) async throws -> (ATHSession, agent: DID, user: DID) {
        let (agentKey, userKey) = (PrivateKey.generate(), PrivateKey.generate())
        let (agent, user) = (try DID("did:ath:assistant"), try DID("did:ath:alice"))
        try await gateway.store.registerAccount(Account(did: user.value, kind: .user, name: "Alice"), key: userKey.publicKey)
        try await gateway.store.registerAccount(Account(did: agent.value, kind: .agent, name: "Assistant", developer: "Dev"), key: agentKey.publicKey)
        let server = gateway.configuration.serverDID
        let userClient = ATHUserClient(baseURL: baseURL, did: user, key: userKey, server: server)
        let answering = Task {
            for _ in 0..<200 {
                if let request = try await userClient.pending().first {
                    _ = try await userClient.answer(request, approve: approve ?? request.requested_scopes)
                    return
                }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        defer { answering.cancel() }
        let credential = try await UserCredential.issue(user: user, key: userKey, client: agent, scopes: scopes, validFor: 3600)
        let session = try await ATHClient(baseURL: baseURL, did: agent, key: agentKey, expectedServer: server).handshake(
            credential: credential, scopes: scopes, ttl: 3600, context: "test", confirmationWait: .seconds(20))
        return (session, agent, user)
    }

    @Test func theExampleConfigurationReadsAsDocumented() async throws {
        let c = try await Self.load(try Self.example)
        #expect(c.publicURL == "https://gateway.example.com" && c.host == "0.0.0.0" && c.port == 8443 && !c.devMode)
        #expect(c.services.map(\.name) == ["shop", "github"])
        let shop = try #require(c.services.first)
        #expect(shop.protocol == .ath && shop.upstream.baseURL == "http://127.0.0.1:9000" && shop.upstream.maxRequestBody == 1_048_576)
        #expect(shop.credential?.name.rawName == "X-Api-Key" && shop.credential?.value == "k-123")
        #expect(try shop.operations.scopes(admitting: "GET", path: "/goods/42") == ["goods:read"])
        #expect(c.policy.scopesSupported == ["goods:read", "order:create"] && c.policy.restrictions.rate_limit == "120/minute")
        #expect(c.policy.scopeDescriptions["order:create"] == "Place orders in your name")
        let github = try #require(c.services.last?.provider)
        #expect(github.clientSecret == "s-456" && github.displayName == "GitHub" && github.clientAuthentication == .post)
        #expect(c.tls?.certificateFile.hasSuffix("/tls/gateway-chain.pem") == true)
    }

    @Test func theEnvironmentAndSetOverrideTheFile() async throws {
        let c = try await Self.load(
            try Self.example, overrides: ["gateway.listen.port=9443", "service.shop.routes=GET /a/** goods:read,POST /b order:create"],
            environment: ["GATEWAY_PUBLIC_URL": "https://other.example", "GATEWAY_LISTEN_PORT": "1"])
        #expect(c.publicURL == "https://other.example" && c.port == 9443)
        #expect(c.services[0].operations.routes.map(\.description) == ["GET /a/** goods:read", "POST /b order:create"])
    }

    /// Each broken configuration stops the start with the key at fault.
    @Test(arguments: [
        ("public_url: \"https://gateway.example.com\"", "public_url: \"not a url\"", "gateway.public_url"),
        ("port: 8443", "port: \"eighty\"", "gateway.listen.port"),
        ("port: 8443", "port: 70000", "gateway.listen.port"),
        ("dev_mode: false", "dev_mode: true", "gateway.dev_mode"),
        ("insecure_http: false", "insecure_http: true", "gateway.insecure_http"),
        ("did: \"did:ath:gateway.example.com\"", "did: \"gateway\"", "server.did"),
        ("protocol: \"ath\"", "protocol: \"grpc\"", "service.shop.protocol"),
        ("- \"POST /orders order:create\"", "- \"POST /orders order:delete\"", "service.shop.routes"),
        ("- \"POST /orders order:create\"", "- \"POST orders order:create\"", "service.shop.routes"),
        ("upstream: \"http://127.0.0.1:9000\"", "upstream: \"ftp://x\"", "service.shop.upstream"),
        ("value_file: \"shop-api-key\"", "value_file: \"missing-file\"", "service.shop.upstream_auth.value_file"),
        ("client_auth: \"client_secret_post\"", "client_auth: \"private_key_jwt\"", "service.github.client_auth"),
        ("services: [\"shop\", \"github\"]", "services: [\"shop\", \"Shop!\"]", "services"),
        ("services: [\"shop\", \"github\"]", "services: [\"shop\", \"missing\"]", "service.missing.protocol"),
        ("rate_limit: \"120/minute\"", "rate_limit: \"often\"", "handshake"),
        ("  sqlite: \"gateway.sqlite\"", "  sqlite: [1, 2]", "store.sqlite"),
        ("  token_lifetime_seconds: 3600", "  token_lifetime_seconds: 3600\n  agent_rate_limit: \"fast\"", "oauth.agent_rate_limit"),
        ("native_app: \"github\"", "native_app: \"shop\"", "oauth.native_app"),
        ("native_app: \"github\"", "native_app: \"github\"\n  revocation_recheck_seconds: 600", "oauth.revocation_recheck_seconds"),
        ("token_file: \"admin-token\"", "token_file: \"shop-api-key\"", "admin.token_file"),
        ("token_file: \"admin-token\"", "token_file: \"missing-file\"", "admin.token_file"),
        ("  sqlite: \"gateway.sqlite\"", "  postgres: \"mysql://db/ath\"", "store.postgres"),
        ("  sqlite: \"gateway.sqlite\"", "  postgres: \"postgres://ath:secret@db/ath\"", "store.postgres"),
        ("  sqlite: \"gateway.sqlite\"", "  sqlite: \"gateway.sqlite\"\n  postgres: \"postgres://ath@db/ath\"", "store.postgres"),
        ("  sqlite: \"gateway.sqlite\"", "  postgres: \"postgres://ath@db/ath\"\n  max_connections: 0", "store.max_connections"),
    ])
    func brokenConfigurationsNameTheirKey(_ find: String, _ replace: String, _ key: String) async throws {
        let yaml = try Self.example
        #expect(yaml.contains(find))
        await #expect { try await Self.load(yaml.replacingOccurrences(of: find, with: replace)) } throws: { error in
            (error as? GatewayConfigurationError)?.key == key
        }
    }

    /// What only starting finds (files that do not read) stops the start, naming the key,
    /// before anything listens.
    /// Two gateways on one PostgreSQL database, as behind a load balancer: a handshake made
    /// through one is honoured by the other, a proof used on one is a replay on the other, and a
    /// revocation through one is pushed to the other.
    @Test(.enabled(if: TestPostgres.available, TestPostgres.skipped)) func twoInstancesOnOnePostgreSQLDatabase() async throws {
        try await TestPostgres.withDatabase { url in
            let upstream = try await MockOAuthProvider.start()
            let yaml = try Self.loopback(upstream: upstream, changes: [("  sqlite: \"gateway.sqlite\"", "  postgres: \"\(url)\"")])
            #expect(yaml.contains("postgres:"))
            let dir = try Self.folder(yaml)
            let configuration = try await GatewayConfiguration.load(file: dir.appendingPathComponent("gateway.yaml").path, environment: [:])
            let (a, b) = (try await Gateway.start(configuration), try await Gateway.start(configuration))
            let (session, _, _) = try await Self.handshake(a, at: a.baseURL, scopes: ["goods:read"])
            #expect(try await session.get("/shop/plain/goods/1").status == 201)
            let headers = await session.authHeaders("GET", "/shop/plain/goods/2", Data())
            #expect(try await HardeningTests.send(b.baseURL, .GET, "/shop/plain/goods/2", headers: headers).status == 201)
            // The same proof again, on the other instance, and on the same one: a replay both times.
            for gateway in [a, b] {
                let replay = try await HardeningTests.send(gateway.baseURL, .GET, "/shop/plain/goods/2", headers: headers)
                #expect(replay.status == 401 && replay.code == "PROOF_REPLAYED", "\(replay.status) \(replay.code ?? "-")")
            }
            // Many fresh proofs at once, spread over both instances: all admitted (batched records).
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<40 {
                    let proof = await session.authHeaders("GET", "/shop/plain/goods/\(i)", Data())
                    let base = i % 2 == 0 ? a.baseURL : b.baseURL
                    group.addTask { try await HardeningTests.send(base, .GET, "/shop/plain/goods/\(i)", headers: proof).status }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.allSatisfy { $0 == 201 }, "\(statuses)")
            // Revoked through B's admin API: A, which checked the grant moments ago (its cache
            // keeps that for 2 s), is told by PostgreSQL and refuses within half a second.
            let admin = ATHAdminClient(baseURL: b.baseURL, adminToken: try #require(configuration.adminToken))
            #expect(try await session.get("/shop/plain/goods/1").status == 201)
            try await admin.revokeGrant(await session.grant.grantID)
            try await Task.sleep(for: .milliseconds(500))
            await #expect { try await session.get("/shop/plain/goods/3") } throws: { ATHError.code($0) == .tokenRevoked }
            for gateway in [a, b] { await gateway.stop() }
            await upstream.stop()
        }
    }

    /// With `admin.token_file`, the gateway serves the admin API: accounts as `ath serve` does,
    /// and ending a v0.1 registration; without its token, nothing.
    @Test func theAdminAPIAnswersItsTokenOnly() async throws {
        let upstream = try await MockOAuthProvider.start()
        let gateway = try await Gateway.start(try await Self.load(try Self.loopback(upstream: upstream)))
        defer { Task { await gateway.stop(); await upstream.stop() } }
        _ = try await Self.handshake(gateway, at: gateway.baseURL, scopes: ["goods:read"])
        let token = try #require(gateway.configuration.adminToken)
        let admin = ATHAdminClient(baseURL: gateway.baseURL, adminToken: token)
        #expect(try await admin.account("did:ath:alice").name == "Alice")
        await #expect { try await admin.revokeRegistration("nobody") } throws: { ATHError.code($0) == .agentNotRegistered }
        let stranger = ATHAdminClient(baseURL: gateway.baseURL, adminToken: token + "x")
        await #expect { try await stranger.revokeRegistration("nobody") } throws: { ATHError.code($0) == .adminAuthenticationRequired }

        let without = try Self.loopback(upstream: upstream, changes: [("admin:\n  token_file: \"admin-token\"\n", "")])
        #expect(!without.contains("admin-token"))
        let plain = try await Gateway.start(try await Self.load(without))
        defer { Task { await plain.stop() } }
        let answer = try await HTTPClient.shared.execute(HTTPClientRequest(url: plain.baseURL + "/ath/admin/accounts/did:ath:alice"), timeout: .seconds(10))
        #expect(answer.status == .notFound)
        let body = try JSONValue.parse(Data(buffer: try await answer.body.collect(upTo: 4096)))
        #expect(body["code"] == "NOT_FOUND", "an unknown path has the documented error shape: \(body)")
    }

    @Test func startUpErrorsNameTheirKey() async throws {
        // The example's TLS files are not in the folder.
        let example = try await Self.load(try Self.example)
        await #expect { try await Gateway.start(example) } throws: { ($0 as? GatewayConfigurationError)?.key == "tls.certificate_file" }
        let dir = try Self.folder(try Self.example)
        try "not a key".write(to: dir.appendingPathComponent("server-key.pem"), atomically: true, encoding: .utf8)
        let badKey = try await GatewayConfiguration.load(file: dir.appendingPathComponent("gateway.yaml").path, environment: [:])
        await #expect { try await Gateway.start(badKey) } throws: { ($0 as? GatewayConfigurationError)?.key == "server.key_file" }
        let missing = try Self.folder(try Self.example.replacingOccurrences(
            of: "  key_file: \"server-key.pem\"\n", with: "  key_file: \"server-key.pem\"\n  accepted_key_files: [\"previous-key.pem\"]\n"))
        let missingAccepted = try await GatewayConfiguration.load(file: missing.appendingPathComponent("gateway.yaml").path, environment: [:])
        #expect(missingAccepted.acceptedKeyFiles == [missing.appendingPathComponent("previous-key.pem").path])
        await #expect { try await Gateway.start(missingAccepted) } throws: {
            ($0 as? GatewayConfigurationError)?.key == "server.accepted_key_files"
        }
    }

    @Test func twoServicesCannotShareAScopeOfTheHandshake() async throws {
        let yaml = try Self.example.replacingOccurrences(of: "protocol: \"oauth\"", with: "protocol: \"ath\"")
            .replacingOccurrences(of: "\"read:user = Read your profile\"", with: "\"goods:read = Also goods\"")
            .replacingOccurrences(of: "GET /user read:user", with: "GET /user goods:read")
        await #expect { try await Self.load(yaml) } throws: { ($0 as? GatewayConfigurationError)?.key == "service.github.scopes" }
    }

    /// A service that knows nothing of ATH, behind the gateway: the handshake on the gateway,
    /// then requests under /shop/ checked as the middleware checks them and forwarded with the
    /// service's own key and the grant's identity.
    @Test func anUnchangedServiceBehindTheHandshake() async throws {
        let upstream = try await MockOAuthProvider.start()
        let gateway = try await Gateway.start(try await Self.load(try Self.loopback(upstream: upstream)))
        defer { Task { await gateway.stop(); await upstream.stop() } }
        let (session, agent, user) = try await Self.handshake(gateway, at: gateway.baseURL, approve: ["goods:read"])

        let found = try await session.get("/shop/plain/goods/42?color=red")
        #expect(found.status == 201, "\(String(decoding: found.body, as: UTF8.self))")
        let seen = await upstream.state.lastEcho
        #expect(seen[":path"] == "/plain/goods/42?color=red" && seen["x-api-key"] == "k-123")
        #expect(seen["x-ath-agent"] == agent.value && seen["x-ath-user"] == user.value && seen["x-ath-scopes"] == "goods:read")
        #expect(seen["authorization"] == nil && seen["ath-proof"] == nil)
        // The user granted goods:read only; /orders needs order:create. Unmapped paths are refused.
        await #expect { try await session.post("/shop/plain/orders", json: ["goods_id": 1]) } throws: {
            ATHError.code($0) == .scopeInsufficient
        }
        await #expect { try await session.get("/shop/plain/admin") } throws: { ATHError.code($0) == .operationNotMapped }
        // Without a token nothing reaches the upstream.
        let plain = try await HTTPClient.shared.execute(HTTPClientRequest(url: gateway.baseURL + "/shop/plain/goods/1"), timeout: .seconds(10))
        #expect(plain.status.code == 401)
        // The v0.1 API is served too, under the configured public URL.
        let discovery = try await HTTPClient.shared.execute(HTTPClientRequest(url: gateway.baseURL + "/.well-known/ath.json"), timeout: .seconds(10))
        #expect(try JSONValue.parse(try await discovery.body.collect(upTo: 65536).readableBytesView)["gateway_id"] == "https://gateway.example.com")
    }

    /// A service that refuses connections is answered 502 UPSTREAM_UNAVAILABLE at once, not after
    /// the timeout; one that does not answer within its timeout 504 UPSTREAM_TIMEOUT.
    @Test func upstreamFailuresHaveTheirOwnAnswers() async throws {
        let upstream = try await MockOAuthProvider.start()
        let slow = try Self.loopback(upstream: upstream, changes: [("timeout_seconds: 30", "timeout_seconds: 1")])
        let gateway = try await Gateway.start(try await Self.load(slow))
        defer { Task { await gateway.stop(); await upstream.stop() } }
        let (session, _, _) = try await Self.handshake(gateway, at: gateway.baseURL, approve: ["goods:read"])
        await #expect { try await session.get("/shop/plain/goods/slow") } throws: { ATHError.code($0) == .upstreamTimeout }
        #expect(try await session.get("/shop/plain/goods/1").status == 201)

        // Bound and not listening for the whole test, so that no other test's server can take it
        // (a port only found free was, once, and answered 404).
        let closedPort = try ReservedPort()
        defer { closedPort.release() }
        let closed = try Self.loopback(upstream: upstream, changes: [(upstream.baseURL, "http://127.0.0.1:\(closedPort.port)")])
        let down = try await Gateway.start(try await Self.load(closed))
        defer { Task { await down.stop() } }
        let (agent, _, _) = try await Self.handshake(down, at: down.baseURL, approve: ["goods:read"])
        // Retried until the 30 s deadline, it would end in UPSTREAM_TIMEOUT.
        await #expect { try await agent.get("/shop/plain/goods/1") } throws: { ATHError.code($0) == .upstreamUnavailable }
    }

    /// A reload (SIGHUP) applies a service's new routes on the same listener; the agent's grant
    /// and connection carry on. A change that needs a restart is refused, naming its key, and
    /// the configuration in force stays.
    @Test func aReloadAppliesServicesAndKeepsGrants() async throws {
        let upstream = try await MockOAuthProvider.start()
        let yaml = try Self.loopback(upstream: upstream)
        // The file is edited in place, as an operator would before sending SIGHUP.
        let file = try Self.folder(yaml).appendingPathComponent("gateway.yaml")
        let reread = { (text: String) async throws -> GatewayConfiguration in
            try text.write(to: file, atomically: true, encoding: .utf8)
            return try await GatewayConfiguration.load(file: file.path, environment: [:])
        }
        let gateway = try await Gateway.start(try await reread(yaml))
        defer { Task { await gateway.stop(); await upstream.stop() } }
        let (session, _, _) = try await Self.handshake(gateway, at: gateway.baseURL, scopes: ["goods:read"])
        await #expect { try await session.get("/shop/plain/extra/1") } throws: { ATHError.code($0) == .operationNotMapped }

        let wider = yaml.replacingOccurrences(
            of: "- \"GET /plain/goods/** goods:read\"", with: "- \"GET /plain/goods/** goods:read\"\n      - \"GET /plain/extra/** goods:read\"")
        try gateway.reload(try await reread(wider))
        #expect(try await session.get("/shop/plain/extra/1").status == 201)
        #expect(try await session.get("/shop/plain/goods/1").status == 201)
        #expect(gateway.configuration.services[0].operations.routes.count == 3)

        for (find, replace, key) in [
            ("port: 0", "port: 1", "gateway.listen"),
            ("- \"order:create = Place orders in your name\"", "- \"order:create = Place orders\"\n      - \"order:cancel = Cancel\"", "handshake (or the scopes of an ath service)"),
            ("token_max_ttl_seconds: 7200", "token_max_ttl_seconds: 3600", "handshake (or the scopes of an ath service)"),
        ] {
            #expect(wider.contains(find), "\(find)")
            let changed = try await reread(wider.replacingOccurrences(of: find, with: replace))
            #expect { try gateway.reload(changed) } throws: { ($0 as? GatewayConfigurationError)?.key == key }
        }
        // Refused reloads changed nothing.
        #expect(try await session.get("/shop/plain/extra/2").status == 201)
    }

    /// A restart (a new configuration, a new binary) keeps every grant: the state is in the
    /// store and the session keys are sealed under a key derived from the server's key.
    @Test func aRestartKeepsGrantsAndTokens() async throws {
        let upstream = try await MockOAuthProvider.start()
        defer { Task { await upstream.stop() } }
        let (file, gateway) = try await onAFreeLoopbackPort { port in
            let file = try Self.folder(try Self.loopback(upstream: upstream, port: port)).appendingPathComponent("gateway.yaml").path
            return (file, try await Gateway.start(try await GatewayConfiguration.load(file: file, environment: [:])))
        }
        let (session, agent, _) = try await Self.handshake(gateway, at: gateway.baseURL, scopes: ["goods:read"])
        #expect(try await session.get("/shop/plain/goods/1").status == 201)

        // The agent's next request goes to a new process on the same port and store. (No request
        // in between: the agent's HTTP client would retry the closed port until its deadline.)
        await gateway.stop()
        let restarted = try await Gateway.start(try await GatewayConfiguration.load(file: file, environment: [:]))
        defer { Task { await restarted.stop() } }
        #expect(try await session.get("/shop/plain/goods/3").status == 201)
        #expect(await upstream.state.lastEcho["x-ath-agent"] == agent.value)
    }
}
