import ATHCore
import ATHServer
import ATHStore
import ATHStorePostgres
import ATHStoreSQLite
import AsyncHTTPClient
import Foundation
import Hummingbird
import NIOCore
import NIOHTTP1
import Testing

/// The v0.1 HTTP API over real HTTP on loopback: a gateway, the mock provider and upstream, and
/// agents made as the official SDKs make them.
@Suite struct OAuthAPITests {
    /// A gateway serving the v0.1 API with the mock's `github` provider.
    struct Gateway {
        let provider: MockOAuthProvider
        /// nil when the gateway under test was started elsewhere (behind nginx).
        let server: RunningServer?
        let store: any ATHStore & OAuthAPIStore
        /// The PostgreSQL database to drop at `stop` (nil on SQLite).
        var database: (store: PostgresStore, name: String)? = nil
        let http: HTTPClient
        /// The public URL agents use.
        let base: String
        var refusals: RefusalAudit? = nil
        /// The API's service, for what only an operator does (nil behind nginx).
        var service: OAuthAPIService? = nil

        /// The helpers against a v0.1 API at `base` whose provider is `provider`.
        static func client(provider: MockOAuthProvider, base: String, store: any ATHStore & OAuthAPIStore) -> Gateway {
            var noRedirects = HTTPClient.Configuration(redirectConfiguration: .disallow)
            noRedirects.timeout.read = .seconds(30)
            return Gateway(
                provider: provider, server: nil, store: store, http: HTTPClient(eventLoopGroupProvider: .singleton, configuration: noRedirects),
                base: base)
        }

        static func start(
            devMode: Bool = false, authentication: OAuthProvider.ClientAuthentication = .post, rate: RateLimit? = nil, backend: Backend = .sqlite,
            recheck: Int64? = nil
        ) async throws -> Gateway {
            let provider = try await MockOAuthProvider.start()
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ath-oauth-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let store: any ATHStore & OAuthAPIStore
            var database: (store: PostgresStore, name: String)?
            switch backend {
            case .sqlite:
                store = try SQLiteStore(path: dir.appendingPathComponent("gateway.sqlite").path)
            case .postgres:
                let opened = try await TestPostgres.openStore()
                (store, database) = (opened.store, (opened.store, opened.name))
            }
            // The public URL holds the ephemeral port: the server starts first, and its routes
            // are built for the URL it got.
            let box = ServiceBox()
            let router = Router(context: ATHRequestContext.self)
            router.middlewares.add(DeferredRoutes(box: box))
            let server = try await RunningServer.start(router)
            var documents = AgentIdentityDocuments.Policy()
            documents.allowLoopback = true
            var configuration = OAuthAPIService.Configuration(publicURL: server.baseURL, providers: [try provider.provider(authentication: authentication)])
            configuration.devMode = devMode
            if let rate { configuration.agentRateLimit = rate }
            if let recheck { configuration.revocationRecheck = recheck }
            let service = OAuthAPIService(
                configuration, store: store, sealer: SecretSealer(key: .init(size: .bits256)), httpClient: .shared,
                documents: AgentIdentityDocuments(policy: documents))
            let inner = Router(context: ATHRequestContext.self)
            let refusals = RefusalAudit(store: store)
            OAuthAPIRoutes<ATHRequestContext>(service: service, forwarder: UpstreamForwarder(httpClient: .shared), scheme: "http", refusals: refusals)
                .register(on: inner)
            box.set(inner.buildResponder())
            let client = Self.client(provider: provider, base: server.baseURL, store: store)
            return Gateway(
                provider: provider, server: server, store: store, database: database, http: client.http, base: server.baseURL, refusals: refusals,
                service: service)
        }

        func stop() async {
            try? await http.shutdown()
            await server?.stop()
            await provider.stop()
            if let database { await TestPostgres.release(database.store, name: database.name) }
        }

        struct Answer {
            var status: Int
            var json: JSONValue
            var headers: [String: String]
            var code: String? { json["code"]?.stringValue }
        }

        func call(
            _ method: HTTPMethod, _ url: String, json: JSONValue? = nil, form: String? = nil, headers: [(String, String)] = []
        ) async throws -> Answer {
            var request = HTTPClientRequest(url: url.hasPrefix("http") ? url : base + url)
            request.method = method
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            if let json {
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(bytes: try CanonicalJSON.bytes(json)))
            }
            if let form {
                request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
                request.body = .bytes(ByteBuffer(string: form))
            }
            let response = try await http.execute(request, timeout: .seconds(30))
            let body = try await response.body.collect(upTo: 1 << 20)
            var fields: [String: String] = [:]
            for (name, value) in response.headers { fields[name.lowercased()] = value }
            return Answer(status: Int(response.status.code), json: (try? JSONValue.parse(body.readableBytesView)) ?? .string(String(buffer: body)), headers: fields)
        }

        /// A new agent, its identity document published on the mock, registered for `scopes`.
        func registeredAgent(scopes: [String] = ["repo", "read:user"], publish: Bool = true) async throws -> (V01Agent, client: String, secret: String) {
            let name = Nonce.generate(bytes: 8)
            let agent = V01Agent(agentID: provider.baseURL + "/agents/\(name).json")
            if publish { await provider.state.publish("/agents/\(name).json", agent.document) }
            let answer = try await call(.POST, "/ath/agents/register", json: registration(agent, scopes: scopes))
            #expect(answer.status == 201, "\(answer.json)")
            return (agent, try #require(answer.json["client_id"]?.stringValue), try #require(answer.json["client_secret"]?.stringValue))
        }

        func registration(_ agent: V01Agent, scopes: [String]) -> JSONValue {
            [
                "agent_id": .string(agent.agentID), "agent_attestation": .string(agent.attestation(audience: base)),
                "developer": ["name": "Dev", "id": "dev-1", "contact": nil],
                "requested_providers": [["provider_id": "github", "scopes": .array(scopes.map(JSONValue.string))]],
                "purpose": "e2e", "redirect_uris": [.string(base + "/ath/callback")],
            ]
        }

        func authorize(_ agent: V01Agent, client: String, scopes: [String] = ["repo", "read:user"]) async throws -> Answer {
            try await call(
                .POST, "/ath/authorize",
                json: [
                    "client_id": .string(client), "agent_attestation": .string(agent.attestation(audience: base)), "provider_id": "github",
                    "scopes": .array(scopes.map(JSONValue.string)), "user_redirect_uri": .string(base + "/ath/callback"),
                    "state": .string(Nonce.generate(bytes: 16)),
                ])
        }

        /// The user's browser: the provider (auto-approving, or denying), then the gateway's
        /// callback; returns the callback's redirect query.
        func consent(_ authorizationURL: String, deny: Bool = false) async throws -> [String: String] {
            var providerURL = authorizationURL
            var cookie: [(String, String)] = []
            if authorizationURL.hasPrefix(base + "/ath/consent/") {
                let continued = try await continueAtConsentPage(authorizationURL)
                providerURL = continued.providerURL
                cookie = [("Cookie", continued.cookie)]
            }
            let atProvider = try await call(.GET, providerURL + "&auto_approve=true" + (deny ? "&deny=true" : ""))
            #expect(atProvider.status == 302)
            let callback = try await call(.GET, try #require(atProvider.headers["location"]), headers: cookie)
            #expect(callback.status == 302, "\(callback.json)")
            let location = try #require(callback.headers["location"])
            #expect(location.hasPrefix(base + "/ath/callback?"))
            return MockOAuthProvider.query(String(location.split(separator: "?", maxSplits: 1).last ?? ""))
        }

        /// The user's browser on the consent page (strict mode): the page, then its form with
        /// `decision`; the answer's redirect and the binding cookie the page set.
        func continueAtConsentPage(_ pageURL: String, decision: String = "approve") async throws -> (providerURL: String, cookie: String) {
            let page = try await call(.GET, pageURL)
            #expect(page.status == 200, "\(page.json)")
            let (cookie, binding) = try Self.binding(page)
            let answer = try await call(.POST, pageURL, form: "binding=\(binding)&decision=\(decision)", headers: [("Cookie", cookie)])
            #expect(answer.status == 303, "\(answer.json)")
            return (try #require(answer.headers["location"]), cookie)
        }

        /// The consent page's cookie (`name=value`) and the form's copy of its value.
        static func binding(_ page: Answer) throws -> (cookie: String, binding: String) {
            let setCookie = try #require(page.headers["set-cookie"])
            let html = try #require(page.json.stringValue)
            let marker = "name=\"binding\" value=\""
            let start = try #require(html.range(of: marker)).upperBound
            let value = html[start...].prefix { $0 != "\"" }
            return (String(setCookie.prefix { $0 != ";" }), String(value))
        }

        func token(_ agent: V01Agent, client: String, secret: String, session: String, code: String?) async throws -> Answer {
            var body: [String: JSONValue] = [
                "grant_type": "authorization_code", "client_id": .string(client), "client_secret": .string(secret),
                "agent_attestation": .string(agent.attestation(audience: base + "/ath/token")), "ath_session_id": .string(session),
            ]
            body["code"] = code.map(JSONValue.string)
            return try await call(.POST, "/ath/token", json: .object(body))
        }

        /// Register, authorize, consent, token: the access token.
        func fullFlow(scopes: [String] = ["repo", "read:user"]) async throws -> (V01Agent, client: String, secret: String, token: String) {
            let (agent, client, secret) = try await registeredAgent()
            let authorization = try await authorize(agent, client: client, scopes: scopes)
            #expect(authorization.status == 200, "\(authorization.json)")
            let back = try await consent(try #require(authorization.json["authorization_url"]?.stringValue))
            let answer = try await token(
                agent, client: client, secret: secret, session: try #require(authorization.json["ath_session_id"]?.stringValue), code: back["code"])
            #expect(answer.status == 200, "\(answer.json)")
            return (agent, client, secret, try #require(answer.json["access_token"]?.stringValue))
        }
    }

    @Test(arguments: Backend.available) func theOfficialSDKsFlowWithVerifiedAttestations(_ backend: Backend) async throws {
        let g = try await Gateway.start(backend: backend)
        defer { Task { await g.stop() } }
        let discovery = try await g.call(.GET, "/.well-known/ath.json")
        #expect(discovery.json["gateway_id"]?.stringValue == g.base)
        #expect(discovery.json["ath_version"] == "0.1")
        #expect(try await g.call(.GET, "/health").status == 200)
        // No native app configured: no native-mode document (Interop/python/sdk_flow.py reads one).
        #expect(try await g.call(.GET, "/.well-known/ath-app.json").status == 404)

        let (agent, client, secret) = try await g.registeredAgent()
        let authorization = try await g.authorize(agent, client: client)
        let session = try #require(authorization.json["ath_session_id"]?.stringValue)
        // Strict mode: the user first meets the gateway's consent page, then the provider.
        let page = try #require(authorization.json["authorization_url"]?.stringValue)
        #expect(page == g.base + "/ath/consent/" + session)
        let (url, cookie) = try await g.continueAtConsentPage(page)
        let query = MockOAuthProvider.query(String(url.split(separator: "?").last ?? ""))
        #expect(url.hasPrefix(g.provider.baseURL + "/authorize?"))
        #expect(query["code_challenge_method"] == "S256" && query["code_challenge"]?.count == 43)
        #expect(query["redirect_uri"] == g.base + "/ath/callback" && query["scope"] == "repo read:user")
        let atProvider = try await g.call(.GET, url + "&auto_approve=true")
        let callback = try await g.call(.GET, try #require(atProvider.headers["location"]), headers: [("Cookie", cookie)])
        #expect(callback.status == 302 && callback.headers["set-cookie"]?.contains("Max-Age=0") == true)
        let back = MockOAuthProvider.query(String(try #require(callback.headers["location"]).split(separator: "?", maxSplits: 1).last ?? ""))
        #expect(back["session_id"] == session && back["success"] == "true")

        let token = try await g.token(agent, client: client, secret: secret, session: session, code: back["code"])
        #expect(token.status == 200)
        #expect(token.json["token_type"] == "Bearer" && token.json["provider_id"] == "github")
        #expect(token.json["agent_id"]?.stringValue == agent.agentID)
        #expect(token.json["scope_intersection"]?["effective"] == ["repo", "read:user"])
        // One token per session.
        let again = try await g.token(agent, client: client, secret: secret, session: session, code: back["code"])
        #expect(again.status == 400 && again.code == "SESSION_NOT_COMPLETED")

        let bearer = try #require(token.json["access_token"]?.stringValue)
        let headers = [("Authorization", "Bearer " + bearer), ("X-ATH-Agent-ID", agent.agentID)]
        let user = try await g.call(.GET, "/ath/proxy/github/userinfo", headers: headers)
        #expect(user.status == 200 && user.json["login"] == "test-user", "\(user.json)")
        #expect(user.headers["content-type"] == "application/json")

        let revoked = try await g.call(
            .POST, "/ath/revoke", json: ["token": .string(bearer), "client_id": .string(client), "client_secret": .string(secret)])
        #expect(revoked.status == 200 && revoked.json == [:])
        let after = try await g.call(.GET, "/ath/proxy/github/userinfo", headers: headers)
        #expect(after.status == 401 && after.code == "TOKEN_REVOKED")
    }

    @Test(arguments: Backend.available) func theProxyChecksInTheContractsOrderAndForwardsOnlyWhatItShould(_ backend: Backend) async throws {
        let g = try await Gateway.start(backend: backend)
        defer { Task { await g.stop() } }
        let (agent, _, _, bearer) = try await g.fullFlow(scopes: ["repo"])
        let auth = [("Authorization", "Bearer " + bearer), ("X-ATH-Agent-ID", agent.agentID)]
        // Another provider, even one not configured at all: PROVIDER_MISMATCH first.
        #expect(try await g.call(.GET, "/ath/proxy/slack/x", headers: auth).code == "PROVIDER_MISMATCH")
        #expect(try await g.call(.GET, "/ath/proxy/github/userinfo", headers: [auth[0]]).code == "AGENT_IDENTITY_MISMATCH")
        #expect(try await g.call(.GET, "/ath/proxy/github/userinfo", headers: [auth[0], ("X-ATH-Agent-ID", "https://other")]).code == "AGENT_IDENTITY_MISMATCH")
        #expect(try await g.call(.GET, "/ath/proxy/github/userinfo", headers: [("Authorization", "Bearer nope"), auth[1]]).code == "TOKEN_INVALID")
        // The token holds repo only: /userinfo needs read:user; /admin is in no route.
        let notHeld = try await g.call(.GET, "/ath/proxy/github/userinfo", headers: auth)
        #expect(notHeld.status == 403 && notHeld.code == "SCOPE_INSUFFICIENT")
        #expect(try await g.call(.GET, "/ath/proxy/github/admin", headers: auth).code == "OPERATION_NOT_MAPPED")
        #expect(try await g.call(.DELETE, "/ath/proxy/github/echo/a", headers: auth).code == "OPERATION_NOT_MAPPED")
        for sneaky in ["/echo/%2e%2e/admin", "/echo/../admin", "/echo/a%2Fb", "/echo//admin", "/echo/..;/admin"] {
            let answer = try await g.call(.GET, "/ath/proxy/github" + sneaky, headers: auth)
            #expect(answer.status == 400 && answer.code == "MALFORMED_MESSAGE", "\(sneaky): \(answer.json)")
        }

        // What reaches the upstream: the provider's token, the gateway's identity fields (the
        // agent's own copies dropped), X-Forwarded-*, the body and query as sent.
        let posted = try await g.call(
            .POST, "/ath/proxy/github/echo/items?x=1&y=a%20b",
            json: ["hello": "world"],
            headers: auth + [("X-ATH-User", "mallory"), ("Cookie", "session=1"), ("Connection", "X-Secret"), ("X-Secret", "hop"), ("X-Custom", "kept")])
        #expect(posted.status == 201 && posted.headers["x-upstream"] == "yes")
        #expect(posted.json == ["hello": "world"] && posted.headers["content-type"] == "text/plain")
        let seen = await g.provider.state.lastEcho
        #expect(seen[":path"] == "/echo/items?x=1&y=a%20b" && seen[":method"] == "POST" && seen[":body-bytes"] == "17")
        #expect(seen["authorization"]?.hasPrefix("Bearer idp_") == true)
        #expect(seen["x-ath-agent"] == agent.agentID && seen["x-ath-user"] != "mallory" && seen["x-ath-scopes"] == "repo")
        #expect(seen["x-ath-agent-id"] == nil && seen["cookie"] == nil && seen["x-secret"] == nil && seen["x-custom"] == "kept")
        #expect(seen["x-forwarded-for"] == "127.0.0.1" && seen["x-forwarded-proto"] == "http")

        // Over the upstream's body limit: refused, not forwarded.
        let big = try await g.call(.PUT, "/ath/proxy/github/echo/big", json: .string(String(repeating: "a", count: 2 << 20)), headers: auth)
        #expect(big.status == 413 && big.code == "PAYLOAD_TOO_LARGE")
    }

    @Test(arguments: Backend.available) func attestationsAreVerifiedAndSingleUse(_ backend: Backend) async throws {
        let g = try await Gateway.start(backend: backend)
        defer { Task { await g.stop() } }
        // An agent whose identity document is not published cannot register.
        let unpublished = V01Agent(agentID: g.provider.baseURL + "/agents/nobody.json")
        let refused = try await g.call(.POST, "/ath/agents/register", json: g.registration(unpublished, scopes: ["repo"]))
        #expect(refused.status == 401 && refused.code == "INVALID_ATTESTATION")

        let (agent, client, _) = try await g.registeredAgent()
        // Signed with another key than the published one.
        let forged = try await g.call(
            .POST, "/ath/authorize",
            json: [
                "client_id": .string(client), "agent_attestation": .string(agent.attestation(audience: g.base, key: .init())),
                "provider_id": "github", "scopes": ["repo"], "state": .string(Nonce.generate()),
                "user_redirect_uri": .string(g.base + "/ath/callback"),
            ])
        #expect(forged.status == 401 && forged.code == "INVALID_ATTESTATION")
        // The same attestation twice: the second is a replay.
        let once = agent.attestation(audience: g.base)
        func authorize(_ attestation: String, state: String = Nonce.generate()) async throws -> Gateway.Answer {
            try await g.call(
                .POST, "/ath/authorize",
                json: [
                    "client_id": .string(client), "agent_attestation": .string(attestation), "provider_id": "github", "scopes": ["repo"],
                    "state": .string(state), "user_redirect_uri": .string(g.base + "/ath/callback"),
                ])
        }
        #expect(try await authorize(once).status == 200)
        #expect(try await authorize(once).code == "INVALID_ATTESTATION")
        // Wrong audience, too old, too long-lived.
        #expect(try await authorize(agent.attestation(audience: g.base + "/ath/token")).code == "INVALID_ATTESTATION")
        #expect(try await authorize(agent.attestation(audience: g.base, now: Date().addingTimeInterval(-400))).code == "INVALID_ATTESTATION")
        #expect(try await authorize(agent.attestation(audience: g.base, lifetime: 3601)).code == "INVALID_ATTESTATION")
        // state is required, of at least 128 bits.
        #expect(try await authorize(agent.attestation(audience: g.base), state: "short").code == "STATE_MISMATCH")
    }

    @Test(arguments: Backend.available) func devModeSkipsOnlyTheSignatureAndTheCode(_ backend: Backend) async throws {
        let g = try await Gateway.start(devMode: true, authentication: .basic, backend: backend)
        defer { Task { await g.stop() } }
        // No identity document: accepted in dev mode.
        let (agent, client, secret) = try await g.registeredAgent(publish: false)
        let authorization = try await g.authorize(agent, client: client)
        _ = try await g.consent(try #require(authorization.json["authorization_url"]?.stringValue))
        let session = try #require(authorization.json["ath_session_id"]?.stringValue)
        // The official suite's placeholder code.
        let token = try await g.token(agent, client: client, secret: secret, session: session, code: "oauth-completed")
        #expect(token.status == 200, "\(token.json)")
        // Every other attestation check stays on.
        let wrongAudience = try await g.call(
            .POST, "/ath/authorize",
            json: [
                "client_id": .string(client), "agent_attestation": .string(agent.attestation(audience: "https://elsewhere")),
                "provider_id": "github", "scopes": ["repo"], "state": .string(Nonce.generate()),
                "user_redirect_uri": .string(g.base + "/ath/callback"),
            ])
        #expect(wrongAudience.code == "INVALID_ATTESTATION")
    }

    /// The consent page shows who asks (escaped), binds the session to the browser that
    /// continues from it, and the provider's callback must come back to that browser.
    @Test(arguments: Backend.available) func theConsentPageBindsTheSessionToOneBrowser(_ backend: Backend) async throws {
        let g = try await Gateway.start(backend: backend)
        defer { Task { await g.stop() } }
        let agent = V01Agent(agentID: g.provider.baseURL + "/agents/\(Nonce.generate(bytes: 8)).json")
        await g.provider.state.publish(String(agent.agentID.dropFirst(g.provider.baseURL.count)), agent.document)
        guard case .object(var registration) = g.registration(agent, scopes: ["repo"]) else { Issue.record("not an object"); return }
        registration["developer"] = ["name": "<script>alert(1)</script>", "id": "dev-x"]
        let registered = try await g.call(.POST, "/ath/agents/register", json: .object(registration))
        let (client, secret) = (try #require(registered.json["client_id"]?.stringValue), try #require(registered.json["client_secret"]?.stringValue))
        let authorization = try await g.authorize(agent, client: client, scopes: ["repo"])
        let session = try #require(authorization.json["ath_session_id"]?.stringValue)
        let pageURL = try #require(authorization.json["authorization_url"]?.stringValue)

        let page = try await g.call(.GET, pageURL)
        let html = try #require(page.json.stringValue)
        #expect(page.status == 200 && page.headers["content-type"]?.hasPrefix("text/html") == true)
        #expect(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !html.contains("<script>"))
        #expect(html.contains(agent.agentID) && html.contains("<code>repo</code>"))
        #expect(page.headers["content-security-policy"]?.contains("form-action 'self'") == true)
        let setCookie = try #require(page.headers["set-cookie"])
        #expect(setCookie.contains("HttpOnly") && setCookie.contains("SameSite=Lax") && setCookie.hasPrefix("ath_consent_" + session + "="))
        let (cookie, binding) = try Gateway.binding(page)

        // Not the page's form: MALFORMED_MESSAGE (found by schemathesis: it was a 500).
        for body in ["", "binding=x", "decision=approve&decision=deny&binding"] {
            let malformed = try await g.call(.POST, pageURL, form: body, headers: [("Cookie", cookie)])
            #expect(malformed.status == 400 && malformed.code == "MALFORMED_MESSAGE", "\(body): \(malformed.json)")
        }
        // A form posted from elsewhere has no cookie, or the wrong one: refused, nothing bound.
        let noCookie = try await g.call(.POST, pageURL, form: "binding=\(binding)&decision=approve")
        #expect(noCookie.status == 400 && noCookie.code == "STATE_MISMATCH")
        let otherCookie = try await g.call(.POST, pageURL, form: "binding=\(binding)&decision=approve", headers: [("Cookie", cookie + "x")])
        #expect(otherCookie.code == "STATE_MISMATCH")
        let crossSite = try await g.call(
            .POST, pageURL, form: "binding=\(binding)&decision=approve", headers: [("Cookie", cookie), ("Origin", "https://evil.example")])
        #expect(crossSite.status >= 400)

        let continued = try await g.call(.POST, pageURL, form: "binding=\(binding)&decision=approve", headers: [("Cookie", cookie)])
        #expect(continued.status == 303)
        let providerURL = try #require(continued.headers["location"])
        #expect(providerURL.hasPrefix(g.provider.baseURL + "/authorize?"))
        // The first browser holds the session: the page does not open again.
        #expect(try await g.call(.GET, pageURL).code == "SESSION_NOT_FOUND")

        let atProvider = try await g.call(.GET, providerURL + "&auto_approve=true")
        let callbackURL = try #require(atProvider.headers["location"])
        // The callback carried to another browser (no cookie, or another session's) fails and
        // changes nothing; in the browser that continued it completes.
        let elsewhere = try await g.call(.GET, callbackURL)
        #expect(elsewhere.status == 400 && elsewhere.code == "STATE_MISMATCH")
        let home = try await g.call(.GET, callbackURL, headers: [("Cookie", cookie)])
        #expect(home.status == 302, "\(home.json)")
        let back = MockOAuthProvider.query(String(try #require(home.headers["location"]).split(separator: "?", maxSplits: 1).last ?? ""))
        let token = try await g.token(agent, client: client, secret: secret, session: session, code: back["code"])
        #expect(token.status == 200, "\(token.json)")
        let audit = try await g.store.auditEvents(limit: 50).map(\.event.event)
        #expect(audit.contains("oauth.authorization.continued"))
    }

    /// Deny on the consent page ends the session: the agent's redirect gets access_denied and
    /// the token request is refused USER_DENIED.
    @Test(arguments: Backend.available) func denyingOnTheConsentPageEndsTheSession(_ backend: Backend) async throws {
        let g = try await Gateway.start(backend: backend)
        defer { Task { await g.stop() } }
        let (agent, client, secret) = try await g.registeredAgent()
        let authorization = try await g.authorize(agent, client: client)
        let session = try #require(authorization.json["ath_session_id"]?.stringValue)
        let (location, _) = try await g.continueAtConsentPage(try #require(authorization.json["authorization_url"]?.stringValue), decision: "deny")
        #expect(location.hasPrefix(g.base + "/ath/callback?"))
        let query = MockOAuthProvider.query(String(location.split(separator: "?", maxSplits: 1).last ?? ""))
        #expect(query["error"] == "access_denied" && query["ath_session_id"] == session)
        let token = try await g.token(agent, client: client, secret: secret, session: session, code: "anything")
        #expect(token.status == 403 && token.code == "USER_DENIED")
    }

    /// The proxy remembers an admitted token, but a revocation made through another instance
    /// (another service on the same store) stops it here once the recheck interval (1 s) has
    /// passed: the remembered token's standing is read again.
    @Test(arguments: Backend.available) func aRevocationThroughAnotherInstanceHoldsWithinTheInterval(_ backend: Backend) async throws {
        let g = try await Gateway.start(backend: backend)
        defer { Task { await g.stop() } }
        let after = try await Self.revokedThroughAnotherInstance(g, thenWait: .milliseconds(1100))
        #expect(after.status == 401 && after.code == "TOKEN_REVOKED", "\(after.json)")
    }

    /// A token admitted through `g`, then revoked through another instance's service on the
    /// same store; what `g`'s proxy answers for it `wait` later.
    static func revokedThroughAnotherInstance(_ g: Gateway, thenWait wait: Duration) async throws -> Gateway.Answer {
        let (agent, client, secret, bearer) = try await g.fullFlow()
        let headers = [("Authorization", "Bearer " + bearer), ("X-ATH-Agent-ID", agent.agentID)]
        #expect(try await g.call(.GET, "/ath/proxy/github/userinfo", headers: headers).status == 200)
        let other = OAuthAPIService(
            .init(publicURL: g.base, providers: [try g.provider.provider()]), store: g.store, sealer: SecretSealer(key: .init(size: .bits256)),
            httpClient: .shared)
        try await other.revoke(["token": .string(bearer), "client_id": .string(client), "client_secret": .string(secret)])
        try await Task.sleep(for: wait)
        return try await g.call(.GET, "/ath/proxy/github/userinfo", headers: headers)
    }

    /// An operator ends a registration: its token is refused at once, a session the user already
    /// completed yields no token, a pending one is denied, and the agent cannot start again.
    @Test(arguments: Backend.available) func anOperatorEndsARegistrationWithItsSessionsAndTokens(_ backend: Backend) async throws {
        let g = try await Gateway.start(backend: backend)
        defer { Task { await g.stop() } }
        let service = try #require(g.service)
        let (agent, client, secret, bearer) = try await g.fullFlow()
        let headers = [("Authorization", "Bearer " + bearer), ("X-ATH-Agent-ID", agent.agentID)]
        #expect(try await g.call(.GET, "/ath/proxy/github/userinfo", headers: headers).status == 200)
        let completed = try await g.authorize(agent, client: client)
        let back = try await g.consent(try #require(completed.json["authorization_url"]?.stringValue))
        let pending = try #require(try await g.authorize(agent, client: client).json["ath_session_id"]?.stringValue)
        let other = try await g.fullFlow()

        #expect(try await service.revokeRegistration(clientID: client, by: "admin") == 1)
        let refused = try await g.call(.GET, "/ath/proxy/github/userinfo", headers: headers)
        #expect(refused.status == 401 && refused.code == "TOKEN_REVOKED", "\(refused.json)")
        let session = try #require(completed.json["ath_session_id"]?.stringValue)
        let token = try await g.token(agent, client: client, secret: secret, session: session, code: back["code"])
        #expect(token.status == 403 && token.code == "AGENT_UNAPPROVED", "\(token.json)")
        for id in [session, pending] { #expect(try await g.store.authorizationSession(id: id)?.status == .denied) }
        #expect(try await g.authorize(agent, client: client).code == "AGENT_UNAPPROVED")
        // Another agent is untouched; an unknown client is named.
        let otherHeaders = [("Authorization", "Bearer " + other.token), ("X-ATH-Agent-ID", other.0.agentID)]
        #expect(try await g.call(.GET, "/ath/proxy/github/userinfo", headers: otherHeaders).status == 200)
        await #expect { try await service.revokeRegistration(clientID: "nobody", by: "admin") } throws: { ATHError.code($0) == .agentNotRegistered }
        let audit = try await g.store.auditEvents(limit: 100).map(\.event)
        #expect(audit.filter { $0.event == "oauth.registration.revoked" && $0.subject == client }.count == 1)
    }

    /// On PostgreSQL a revocation is pushed: with a minute between standing re-reads, a token
    /// revoked through another instance is still refused within half a second.
    @Test(.enabled(if: TestPostgres.available, TestPostgres.skipped)) func aRevocationIsPushedToEveryInstance() async throws {
        let g = try await Gateway.start(backend: .postgres, recheck: 60)
        defer { Task { await g.stop() } }
        let after = try await Self.revokedThroughAnotherInstance(g, thenWait: .milliseconds(500))
        #expect(after.status == 401 && after.code == "TOKEN_REVOKED", "\(after.json)")
    }

    /// Each agent's calls are limited (RATE_LIMITED, 429), another agent's not affected.
    @Test(arguments: Backend.available) func eachAgentHasARate(_ backend: Backend) async throws {
        let g = try await Gateway.start(rate: try RateLimit(parsing: "6/minute"), backend: backend)
        defer { Task { await g.stop() } }
        // register, authorize, token: three calls; then three proxied ones pass and the fourth not.
        let (agent, _, _, bearer) = try await g.fullFlow(scopes: ["read:user"])
        let auth = [("Authorization", "Bearer " + bearer), ("X-ATH-Agent-ID", agent.agentID)]
        for _ in 0..<3 { #expect(try await g.call(.GET, "/ath/proxy/github/userinfo", headers: auth).status == 200) }
        let limited = try await g.call(.GET, "/ath/proxy/github/userinfo", headers: auth)
        #expect(limited.status == 429 && limited.code == "RATE_LIMITED")
        let (_, other, _) = try await g.registeredAgent()
        #expect(!other.isEmpty)
    }

    @Test(arguments: Backend.available) func registrationAndTokenRefusals(_ backend: Backend) async throws {
        let g = try await Gateway.start(backend: backend)
        defer { Task { await g.stop() } }
        let (agent, client, secret) = try await g.registeredAgent()
        // The same agent id again.
        let duplicate = try await g.call(.POST, "/ath/agents/register", json: g.registration(agent, scopes: ["repo"]))
        #expect(duplicate.status == 409 && duplicate.code == "AGENT_ALREADY_REGISTERED")
        // Its own registration, with its credentials only.
        let basic = "Basic " + Data("\(client):\(secret)".utf8).base64EncodedString()
        let own = try await g.call(.GET, "/ath/agents/\(client)", headers: [("Authorization", basic)])
        #expect(own.status == 200 && own.json["agent_id"]?.stringValue == agent.agentID && own.json["client_secret"] == nil)
        let wrong = "Basic " + Data("\(client):nope".utf8).base64EncodedString()
        #expect(try await g.call(.GET, "/ath/agents/\(client)", headers: [("Authorization", wrong)]).code == "INVALID_CLIENT")
        // A redirect it did not register; a provider it was not approved for; a scope it was not.
        var body: [String: JSONValue] = [
            "client_id": .string(client), "provider_id": "github", "scopes": ["repo"], "state": .string(Nonce.generate()),
            "user_redirect_uri": "https://evil.example/cb",
        ]
        body["agent_attestation"] = .string(agent.attestation(audience: g.base))
        #expect(try await g.call(.POST, "/ath/authorize", json: .object(body)).code == "REDIRECT_URI_MISMATCH")
        body["user_redirect_uri"] = .string(g.base + "/ath/callback")
        body["provider_id"] = "slack"
        body["agent_attestation"] = .string(agent.attestation(audience: g.base))
        #expect(try await g.call(.POST, "/ath/authorize", json: .object(body)).code == "PROVIDER_NOT_APPROVED")
        body["provider_id"] = "github"
        body["scopes"] = ["admin:org"]
        body["agent_attestation"] = .string(agent.attestation(audience: g.base))
        #expect(try await g.call(.POST, "/ath/authorize", json: .object(body)).code == "SCOPE_NOT_APPROVED")

        // Token: unknown session, wrong secret, before consent, wrong code, after a denial.
        #expect(try await g.token(agent, client: client, secret: secret, session: "nonexistent_session", code: "x").code == "SESSION_NOT_FOUND")
        let authorization = try await g.authorize(agent, client: client)
        let session = try #require(authorization.json["ath_session_id"]?.stringValue)
        #expect(try await g.token(agent, client: client, secret: "nope", session: session, code: "x").code == "INVALID_CLIENT")
        #expect(try await g.token(agent, client: client, secret: secret, session: session, code: "x").code == "SESSION_NOT_COMPLETED")
        let back = try await g.consent(try #require(authorization.json["authorization_url"]?.stringValue))
        #expect(try await g.token(agent, client: client, secret: secret, session: session, code: "oauth-completed").code == "SESSION_NOT_COMPLETED")
        #expect(try await g.token(agent, client: client, secret: secret, session: session, code: back["code"]).status == 200)

        let denied = try await g.authorize(agent, client: client)
        let deniedBack = try await g.consent(try #require(denied.json["authorization_url"]?.stringValue), deny: true)
        #expect(deniedBack["error"] == "access_denied")
        let deniedToken = try await g.token(
            agent, client: client, secret: secret, session: try #require(denied.json["ath_session_id"]?.stringValue), code: nil)
        #expect(deniedToken.status == 403 && deniedToken.code == "USER_DENIED")

        // The user consented to nothing that was requested: no token.
        await g.provider.state.setConsented("user:email")
        let narrow = try await g.authorize(agent, client: client)
        let narrowBack = try await g.consent(try #require(narrow.json["authorization_url"]?.stringValue))
        let none = try await g.token(
            agent, client: client, secret: secret, session: try #require(narrow.json["ath_session_id"]?.stringValue), code: narrowBack["code"])
        #expect(none.status == 403 && none.code == "SCOPE_NOT_APPROVED")
        // A callback for a state nobody issued.
        #expect(try await g.call(.GET, "/ath/callback?code=x&state=unknown").code == "STATE_MISMATCH")
        // Every refusal is in the audit log, with its code and what was asked.
        await g.refusals?.flush()
        let refused = try await g.store.auditEvents(limit: 200).map(\.event).filter { $0.event == "oauth.refused" }
        for code in ["AGENT_ALREADY_REGISTERED", "INVALID_CLIENT", "REDIRECT_URI_MISMATCH", "SESSION_NOT_FOUND", "USER_DENIED", "STATE_MISMATCH"] {
            #expect(refused.contains { $0.outcome == code }, "\(code) is not audited")
        }
        #expect(refused.contains { $0.subject == "GET /ath/callback" && $0.actor == "127.0.0.1" })
    }
}

/// Lets a router be built after the server is bound (the public URL holds the port).
final class ServiceBox: @unchecked Sendable {
    private let lock = NSLock()
    private var responder: (any HTTPResponder<ATHRequestContext>)?

    func set(_ responder: some HTTPResponder<ATHRequestContext>) {
        lock.withLock { self.responder = responder }
    }

    func get() -> (any HTTPResponder<ATHRequestContext>)? { lock.withLock { responder } }
}

struct DeferredRoutes: RouterMiddleware {
    typealias Context = ATHRequestContext
    let box: ServiceBox

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let responder = box.get() else { return try await next(request, context) }
        return try await responder.respond(to: request, context: context)
    }
}
