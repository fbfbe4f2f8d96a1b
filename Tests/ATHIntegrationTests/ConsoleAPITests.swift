import ATHAgent
import ATHCore
import ATHServer
import AsyncHTTPClient
import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import ShoppingExample
import Testing

/// The consent console's API as a browser uses it, with the browser's key played by a P-256 key
/// here (the headless-browser test drives the real page).
@Suite struct ConsoleAPITests {
    struct Reply {
        var status: Int
        var headers: HTTPHeaders
        var json: JSONValue?
    }

    /// A browser: its key, its cookie, its CSRF token.
    final class Browser: @unchecked Sendable {
        let base: String
        let key = PrivateKey.generate(.es256)
        var cookie: String?
        var csrf: String?
        var origin: String?

        init(_ base: String) { self.base = base }

        func call(_ method: HTTPMethod, _ path: String, _ body: JSONValue? = nil, csrf sendCSRF: Bool = true) async throws -> Reply {
            var request = HTTPClientRequest(url: base + "/ath/console" + path)
            request.method = method
            if let cookie { request.headers.add(name: "cookie", value: "ath_console=\(cookie)") }
            if sendCSRF, let csrf { request.headers.add(name: "x-ath-csrf", value: csrf) }
            if let origin { request.headers.add(name: "origin", value: origin) }
            if let body {
                request.headers.add(name: "content-type", value: "application/json")
                request.body = .bytes(ByteBuffer(bytes: try CanonicalJSON.bytes(body)))
            }
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
            let bytes = try await response.body.collect(upTo: 1 << 20)
            return Reply(status: Int(response.status.code), headers: response.headers, json: try? JSONValue.parse(bytes.readableBytesView))
        }

        var spki: String {
            guard case .p256(let k) = key.publicKey else { return "" }
            return Base64URL.encode(k.derRepresentation)
        }

        func enroll(_ h: Harness) async throws -> Reply {
            let token = try await UserRequestToken.make(user: h.user, key: h.userKey, server: ShoppingPlatform.did, now: Date(), typ: ConsoleLogin.enrollmentTyp)
            return try await call(.POST, "/api/enroll", ["token": .string(token), "public_key": .string(spki)])
        }

        func signIn(_ h: Harness) async throws -> Reply {
            let challenge = try #require(try await call(.POST, "/api/challenge", ["did": .string(h.user.value)]).json?["challenge"]?.stringValue)
            let signature = try key.signature(for: try ConsoleLogin.signingInput(server: ShoppingPlatform.did, user: h.user, challenge: challenge))
            let reply = try await call(
                .POST, "/api/login",
                ["did": .string(h.user.value), "kid": .string(key.publicKey.thumbprint), "challenge": .string(challenge), "signature": .string(Base64URL.encode(signature))])
            if let setCookie = reply.headers.first(name: "set-cookie"), let value = setCookie.split(separator: ";").first?.split(separator: "=", maxSplits: 1).last {
                cookie = String(value)
            }
            csrf = reply.json?["csrf"]?.stringValue
            return reply
        }
    }

    static func signedIn() async throws -> (Harness, Browser) {
        let h = try await Harness.start()
        try await h.registerParties()
        let browser = Browser(h.server.baseURL)
        #expect(try await browser.enroll(h).status == 201)
        #expect(try await browser.signIn(h).status == 200)
        return (h, browser)
    }

    @Test(arguments: Backend.available) func enrollingAndSigningIn(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        try await h.registerParties()
        let browser = Browser(h.server.baseURL)
        // Not signed in: 401 with a challenge, and the protective headers even on the error.
        var r = try await browser.call(.GET, "/api/me")
        #expect(r.status == 401 && r.json?["code"] == "USER_AUTHENTICATION_FAILED")
        #expect(r.headers.first(name: "content-security-policy")?.contains("script-src 'self'") == true)
        // A user-API token is not an enrollment token; an enrollment token works once.
        let apiToken = try await UserRequestToken.make(user: h.user, key: h.userKey, server: ShoppingPlatform.did, now: Date())
        r = try await browser.call(.POST, "/api/enroll", ["token": .string(apiToken), "public_key": .string(browser.spki)])
        #expect(r.status == 401)
        let token = try await UserRequestToken.make(user: h.user, key: h.userKey, server: ShoppingPlatform.did, now: Date(), typ: ConsoleLogin.enrollmentTyp)
        r = try await browser.call(.POST, "/api/enroll", ["token": .string(token), "public_key": .string(browser.spki)])
        #expect(r.status == 201 && r.json?["kid"] == .string(browser.key.publicKey.thumbprint))
        #expect(try await h.store.activeKeys(did: h.user.value).contains(browser.key.publicKey))
        r = try await browser.call(.POST, "/api/enroll", ["token": .string(token), "public_key": .string(Browser(h.server.baseURL).spki)])
        #expect(r.status == 401)
        await h.service.refusals.flush()
        let refused = try await h.store.auditEvents(limit: 100).map(\.event).filter { $0.event == "console.enroll" && $0.outcome == "USER_AUTHENTICATION_FAILED" }
        // Both, counted in one record (same source, same reason).
        #expect(refused.map(RefusalAuditTests.count).reduce(0, +) == 2 && refused.allSatisfy { $0.actor == h.user.value })

        // A signature by another key, or a challenge used twice, signs nobody in.
        let challenge = try #require(try await browser.call(.POST, "/api/challenge", ["did": .string(h.user.value)]).json?["challenge"]?.stringValue)
        let input = try ConsoleLogin.signingInput(server: ShoppingPlatform.did, user: h.user, challenge: challenge)
        let forged = try PrivateKey.generate(.es256).signature(for: input)
        let login: (Data) -> JSONValue = { sig in
            ["did": .string(h.user.value), "kid": .string(browser.key.publicKey.thumbprint), "challenge": .string(challenge), "signature": .string(Base64URL.encode(sig))]
        }
        #expect(try await browser.call(.POST, "/api/login", login(forged)).status == 401)
        let good = try browser.key.signature(for: input)
        r = try await browser.call(.POST, "/api/login", login(good))
        #expect(r.status == 200)
        let cookie = try #require(r.headers.first(name: "set-cookie"))
        for flag in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/ath/console", "Max-Age=1800"] { #expect(cookie.contains(flag)) }
        #expect(try await browser.call(.POST, "/api/login", login(good)).status == 401)

        #expect(try await browser.signIn(h).status == 200)
        r = try await browser.call(.GET, "/api/me")
        #expect(r.status == 200 && r.json?["did"] == .string(h.user.value) && r.json?["name"] == "Alice")
        // A cookie altered by one character is nobody's (one in the middle: the last may only
        // carry padding bits).
        let saved = try #require(browser.cookie)
        var chars = Array(saved)
        chars[chars.count / 2] = chars[chars.count / 2] == "A" ? "B" : "A"
        browser.cookie = String(chars)
        #expect(try await browser.call(.GET, "/api/me").status == 401)
        browser.cookie = saved
        // Revoking the browser's key signs it out.
        try await h.store.revokeKey(did: h.user.value, kid: browser.key.publicKey.thumbprint)
        #expect(try await browser.call(.GET, "/api/me").status == 401)
        await h.stop()
    }

    /// Signing out ends the session on the server: the cookie is sealed, so a copy of it kept by
    /// anyone (another tab, a proxy log) must stop working too, not only the browser's.
    @Test func signingOutEndsTheCookie() async throws {
        let (h, browser) = try await Self.signedIn()
        let cookie = try #require(browser.cookie)
        #expect(try await browser.call(.GET, "/api/pending").status == 200)
        #expect(try await browser.call(.POST, "/api/logout", csrf: false).status == 403)  // CSRF applies to sign-out too
        browser.origin = h.server.baseURL
        let out = try await browser.call(.POST, "/api/logout")
        #expect(out.status == 200 && out.headers.first(name: "set-cookie")?.contains("Max-Age=0") == true)
        browser.cookie = cookie
        let after = try await browser.call(.GET, "/api/pending")
        #expect(after.status == 401 && after.json?["code"] == "USER_AUTHENTICATION_FAILED")
        // Signing in again gives a new session that works.
        #expect(try await browser.signIn(h).status == 200 && browser.cookie != cookie)
        #expect(try await browser.call(.GET, "/api/pending").status == 200)
        let records = try await h.store.auditRecords(after: 0, limit: 1_000)
        #expect(records.contains { $0.event.event == "console.logout" && $0.event.actor == h.user.value })
        await h.stop()
    }

    @Test func answeringAPendingRequestAndRevokingTheGrant() async throws {
        let (h, browser) = try await Self.signedIn()
        let credential = try await h.credential()
        let agent = Task {
            try await h.client.handshake(credential: credential, scopes: ["goods:read", "order:create"], ttl: 3600, context: "buy a <b>phone</b>", confirmationWait: .seconds(20))
        }
        var pending: [JSONValue] = []
        for _ in 0..<100 where pending.isEmpty {
            if case .array(let items)? = try await browser.call(.GET, "/api/pending").json?["requests"] { pending = items }
            if pending.isEmpty { try await Task.sleep(for: .milliseconds(50)) }
        }
        let item = try #require(pending.first)
        #expect(item["scope_descriptions"]?["order:create"] == "Place orders that you pay for")
        #expect(item["request"]?["context"] == "buy a <b>phone</b>")  // data, escaped by the page when shown
        let request = try #require(item["request"]).decode(AuthorizationConfirmationRequest.self)
        // The browser's enrolled key signs step 7.
        let m7 = try UserConfirmation.answer(request, approvedScopes: ["goods:read"], key: browser.key, now: Date())
        // Without the CSRF token, or from another origin: refused, nothing decided.
        var r = try await browser.call(.POST, "/api/confirmations/\(request.request_id)", m7, csrf: false)
        #expect(r.status == 403 && r.json?["code"] == "CSRF_CHECK_FAILED")
        browser.origin = "https://evil.example"
        #expect(try await browser.call(.POST, "/api/confirmations/\(request.request_id)", m7).status == 403)
        browser.origin = h.server.baseURL
        r = try await browser.call(.POST, "/api/confirmations/\(request.request_id)", m7)
        #expect(r.status == 200 && r.json?["status"] == "approved")
        let session = try await agent.value
        #expect(await session.grant.scopesGranted == ["goods:read"])

        r = try await browser.call(.GET, "/api/grants")
        guard case .array(let grants)? = r.json?["grants"] else { Issue.record("no grants list"); return await h.stop() }
        #expect(grants.count == 1 && grants.first?["client_name"] == "Assistant" && grants.first?["scopes"] == ["goods:read"])
        let grantID = await session.grant.grantID
        #expect(try await browser.call(.POST, "/api/grants/\(grantID)/revoke", csrf: false).status == 403)
        #expect(try await session.get("/api/goods").status == 200)
        r = try await browser.call(.POST, "/api/grants/\(grantID)/revoke")
        #expect(r.status == 200)
        await #expect { try await session.get("/api/goods") } throws: { ATHError.code($0) == .tokenRevoked }
        #expect(try await browser.call(.POST, "/api/grants/nope/revoke").status == 404)
        await h.stop()
    }

    @Test(arguments: Backend.available) func thePageLoadsOnlyItsOwnScript(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        let browser = Browser(h.server.baseURL)
        var request = HTTPClientRequest(url: h.server.baseURL + "/ath/console")
        request.method = .GET
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let page = String(buffer: try await response.body.collect(upTo: 1 << 20))
        #expect(response.status == .ok && response.headers.first(name: "content-type")?.hasPrefix("text/html") == true)
        #expect(page.contains("<script src=\"/ath/console/console.js\""))
        #expect(!page.contains("<script>") && !page.contains("onclick="))
        let csp = try #require(response.headers.first(name: "content-security-policy"))
        #expect(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"))
        #expect(response.headers.first(name: "x-frame-options") == "DENY" && response.headers.first(name: "cache-control") == "no-store")
        let script = try await browser.call(.GET, "/console.js")
        #expect(script.status == 200 && script.headers.first(name: "content-type")?.hasPrefix("text/javascript") == true)
        await h.stop()
    }
}
