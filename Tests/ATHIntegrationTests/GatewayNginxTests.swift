import ATHAgent
import ATHCore
import ATHGateway
import ATHServer
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import ATHTestSupport

/// Debian's nginx with Examples/Gateway/nginx.conf as written (its addresses replaced by loopback
/// ports), asking `ath authz` about every request to an unchanged service. `.ci/run` installs nginx.
@Suite(.serialized) struct GatewayNginxTests {
    static let nginx = "/usr/sbin/nginx"

    final class Nginx: Sendable {
        let process: ChildProcess
        let port: Int
        var baseURL: String { "http://127.0.0.1:\(port)" }

        init(configuration: String, port: Int) async throws {
            try #require(FileManager.default.isExecutableFile(atPath: GatewayNginxTests.nginx), "nginx is missing: apt-get install nginx-light (.ci/run does)")
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ath-nginx-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir.appendingPathComponent("logs"), withIntermediateDirectories: true)
            self.port = port
            let conf = dir.appendingPathComponent("nginx.conf")
            try configuration.replacingOccurrences(of: "127.0.0.1:8080", with: "127.0.0.1:\(port)").write(to: conf, atomically: true, encoding: .utf8)
            process = ChildProcess()
            process.executableURL = URL(fileURLWithPath: GatewayNginxTests.nginx)
            process.arguments = [
                "-p", dir.path, "-c", conf.path,
                "-g", "daemon off; master_process off; pid \(dir.path)/nginx.pid; error_log \(dir.path)/logs/error.log;",
            ]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            for _ in 0..<100 {
                if let (status, _, _) = try? await Self.get("http://127.0.0.1:\(port)/ath/none"), status > 0 { return }
                try await Task.sleep(for: .milliseconds(50))
            }
            stop()
            throw ATHError(.internalError, "nginx did not start: \((try? String(contentsOf: dir.appendingPathComponent("logs/error.log"), encoding: .utf8)) ?? "")")
        }

        /// SIGKILL: a single-process nginx started from the test process inherits its blocked
        /// SIGTERM and would never see it.
        func stop() {
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
        }

        static func get(_ url: String, headers: [(String, String)] = []) async throws -> (Int, [String: String], String) {
            var request = HTTPClientRequest(url: url)
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
            let body = try await response.body.collect(upTo: 1 << 20)
            var fields: [String: String] = [:]
            for (name, value) in response.headers { fields[name.lowercased()] = value }
            return (Int(response.status.code), fields, String(buffer: body))
        }
    }

    @Test func nginxAuthRequestWithTheGatewaysCheck() async throws {
        let upstream = try await MockOAuthProvider.start()
        let port = try freeLoopbackPort()
        let yaml = try GatewayTests.loopback(
            upstream: upstream,
            changes: [
                ("rate_limit: \"120/minute\"", "rate_limit: \"3/minute\""),
                ("public_url: \"https://gateway.example.com\"", "public_url: \"http://127.0.0.1:\(port)\""),
                ("oauth:\n", "oauth:\n  identity_documents_on_loopback: true\n"),
                ("https://api.github.com", upstream.baseURL),
                ("https://github.com/login/oauth/authorize", upstream.baseURL + "/authorize"),
                ("https://github.com/login/oauth/access_token", upstream.baseURL + "/token"),
                ("your-oauth-app-client-id", MockOAuthProvider.clientID),
                ("- \"GET /user read:user\"", "- \"GET /userinfo read:user\""),
            ])
        let gateway = try await Gateway.start(
            try await GatewayTests.load(yaml, overrides: ["authz.listen.port=0"], files: ["github-client-secret": MockOAuthProvider.clientSecret]),
            mode: .externalAuthorization)
        let authz = try #require(gateway.authz)
        let upstreamPort = try #require(upstream.baseURL.split(separator: ":").last)
        let configuration = try String(
            contentsOf: OfficialSDKTests.repository.appendingPathComponent("Examples/Gateway/nginx.conf"), encoding: .utf8)
            .replacingOccurrences(of: "127.0.0.1:8443", with: "127.0.0.1:\(gateway.server.port)")
            .replacingOccurrences(of: "127.0.0.1:9191", with: "127.0.0.1:\(authz.port)")
            .replacingOccurrences(of: "127.0.0.1:9000", with: "127.0.0.1:\(upstreamPort)")
            .replacingOccurrences(of: "127.0.0.1:9001", with: "127.0.0.1:\(upstreamPort)")
        let nginx = try await Nginx(configuration: configuration, port: port)
        defer { nginx.stop(); Task { await gateway.stop(); await upstream.stop() } }

        // An agent on the v0.1 API, through nginx: the API on the gateway's listener, the proxy
        // checked by authz and forwarded by nginx with the user's provider token.
        let v01 = OAuthAPITests.Gateway.client(provider: upstream, base: nginx.baseURL, store: gateway.store)
        defer { Task { try? await v01.http.shutdown() } }
        let (v01Agent, _, _, bearer) = try await v01.fullFlow(scopes: ["repo", "read:user"])
        let userinfo = try await v01.call(.GET, "/ath/proxy/github/userinfo", headers: [("Authorization", "Bearer " + bearer), ("X-ATH-Agent-ID", v01Agent.agentID)])
        #expect(userinfo.status == 200 && userinfo.json["login"] == "test-user", "\(userinfo.json)")
        let wrongAgent = try await v01.call(.GET, "/ath/proxy/github/userinfo", headers: [("Authorization", "Bearer " + bearer), ("X-ATH-Agent-ID", "https://x")])
        #expect(wrongAgent.status == 403 && wrongAgent.code == "AGENT_IDENTITY_MISMATCH")

        // The handshake through nginx to the gateway's listener.
        let (session, agent, user) = try await GatewayTests.handshake(gateway, at: nginx.baseURL)

        // Admitted by the check, forwarded by nginx with the grant's identity and without the
        // agent's credentials for the gateway.
        let found = try await session.get("/shop/plain/goods/42?color=red")
        #expect(found.status == 201)
        let seen = await upstream.state.lastEcho
        #expect(seen[":path"] == "/plain/goods/42?color=red")
        #expect(seen["x-ath-agent"] == agent.value && seen["x-ath-user"] == user.value && seen["x-ath-grant"]?.isEmpty == false)
        #expect(seen["authorization"] == nil && seen["ath-proof"] == nil)

        // Refusals reach the client as the gateway words them, with their own status.
        let (missing, missingHeaders, missingBody) = try await Nginx.get(nginx.baseURL + "/shop/plain/goods/1")
        #expect(missing == 401 && (try? JSONValue.parse(Array(missingBody.utf8)))?["code"] == "TOKEN_MISSING", "\(missingBody)")
        #expect(missingHeaders["content-type"]?.hasPrefix("application/json") == true)
        await #expect { try await session.get("/shop/plain/admin") } throws: { ATHError.code($0) == .operationNotMapped }
        // Envoy's shape (its HTTP external authorization, `path_prefix: /ath/authz/envoy`,
        // `with_request_body`): the request as it is, the body included; refusals with their own
        // status and JSON. Envoy itself is not on this machine: this is the request it sends.
        let envoyBase = authz.baseURL + "/ath/authz/envoy"
        let body = Data(#"{"goods_id":1}"#.utf8)
        let postHeaders = await session.authHeaders("POST", "/shop/plain/orders", body)
        var post = HTTPClientRequest(url: envoyBase + "/shop/plain/orders")
        post.method = .POST
        for (name, value) in postHeaders { post.headers.add(name: name, value: value) }
        post.headers.add(name: "Content-Type", value: "application/json")
        post.body = .bytes(ByteBuffer(bytes: body))
        let envoyAdmitted = try await HTTPClient.shared.execute(post, timeout: .seconds(10))
        #expect(envoyAdmitted.status.code == 200 && envoyAdmitted.headers.first(name: "X-ATH-Scopes")?.contains("order:create") == true)
        let (unauthorized, _, unauthorizedBody) = try await Nginx.get(envoyBase + "/shop/plain/goods/1")
        #expect(unauthorized == 401 && (try? JSONValue.parse(Array(unauthorizedBody.utf8)))?["code"] == "TOKEN_MISSING")
        // Through nginx, the check sees no body, so the proof (which covers it) fails: requests
        // with bodies go through `ath gateway` or Envoy (docs/GATEWAY.md).
        await #expect { try await session.post("/shop/plain/orders", json: ["goods_id": 1]) } throws: { ATHError.code($0) == .proofInvalid }

        // The grant's rate is 3 a minute (two admitted so far): the fourth is refused with 429.
        #expect(try await session.get("/shop/plain/goods/2").status == 201)
        await #expect { try await session.get("/shop/plain/goods/3") } throws: { ATHError.code($0) == .rateLimited }
    }
}
