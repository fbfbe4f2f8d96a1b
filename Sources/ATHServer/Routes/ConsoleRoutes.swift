import ATHCore
import Foundation
import HTTPTypes
import Hummingbird

/// The consent console's web binding: the user's pages and the JSON API they call.
///
///     GET  /ath/console                          the page (ConsoleAssets)
///     GET  /ath/console/console.js, console.css
///     POST /ath/console/api/enroll               {token, public_key}        -> {did, kid}
///     POST /ath/console/api/challenge            {did}                      -> {challenge, server_did}
///     POST /ath/console/api/login                {did, kid, challenge, signature} -> {did, csrf} + session cookie
///     GET  /ath/console/api/me                   -> {did, name, csrf}
///     GET  /ath/console/api/pending              -> {requests: [{request, scope_descriptions}]}
///     POST /ath/console/api/confirmations/{id}   step 7, signed in the browser -> receipt
///     GET  /ath/console/api/grants               -> {grants: [...]}
///     POST /ath/console/api/grants/{id}/revoke   -> {grant_id}
///     POST /ath/console/api/logout
///     GET  /ath/console/api/config               -> {oidc}
///     GET  /ath/console/oidc/start               302 to the OpenID provider (+ a sealed login-state cookie)
///     GET  /ath/console/oidc/callback?code&state 302 to /ath/console#enroll=<one-time ticket>
///
/// Protection: the session cookie is sealed, HttpOnly, SameSite=Strict, Secure (unless turned
/// off for plain-HTTP development), scoped to /ath/console and 30 minutes long; every POST
/// after sign-in must carry the session's CSRF token in `X-ATH-CSRF` and, when the browser
/// sends one, an `Origin` equal to the host's; every answer carries a content security policy
/// that allows only this origin's script and style (no inline script), no framing, no referrer
/// and no caching. The page fills itself with `textContent` only, so nothing is interpreted as HTML.
public struct ConsoleRoutes<Context: ATHRequestContextProtocol>: Sendable {
    let service: ATHService
    let secureCookies: Bool
    public static var cookieName: String { "ath_console" }
    static var csrfHeader: HTTPField.Name { HTTPField.Name("X-ATH-CSRF")! }

    public init(service: ATHService, secureCookies: Bool = true) {
        self.service = service
        self.secureCookies = secureCookies
    }

    struct EnrollBody: Codable { var token: String; var public_key: String }
    struct ChallengeBody: Codable { var did: String }
    struct LoginBody: Codable { var did: String; var kid: String; var challenge: String; var signature: String }
    struct Me: Codable { var did: String; var name: String?; var csrf: String }
    struct Requests: Codable { var requests: [ATHService.ConsoleRequest] }
    struct Grants: Codable { var grants: [ATHService.ConsoleGrant] }
    struct Revoked: Codable { var grant_id: String }

    public func register(on router: Router<Context>) {
        let service = self.service
        let console = router.group("ath/console").add(middleware: ConsoleHeadersMiddleware<Context>())
            .add(middleware: ErrorShapeMiddleware<Context>())
        // Enrollment, sign-in and a step-7 answer are each a few hundred bytes.
        let limit = HandshakeRoutes<Context>.decisionLimit
        console.get { _, _ in Self.asset(ConsoleAssets.page, type: "text/html; charset=utf-8") }
        console.get("console.js") { _, _ in Self.asset(ConsoleAssets.script, type: "text/javascript; charset=utf-8") }
        console.get("console.css") { _, _ in Self.asset(ConsoleAssets.style, type: "text/css; charset=utf-8") }

        console.get("oidc/start") { _, _ in
            let (redirect, state) = try await service.oidcStart()
            var response = Response(status: .found, headers: [.location: redirect])
            response.headers[.setCookie] = self.oidcCookie(state, maxAge: ATHService.oidcLoginSeconds)
            return response
        }
        console.get("oidc/callback") { request, _ in
            let query = request.uri.queryParameters
            if let error = query["error"] {
                throw ATHError(.userAuthenticationFailed, "the identity provider did not sign you in (\(String(error).prefix(64)))")
            }
            guard let code = query["code"], let state = query["state"],
                let cookie = Self.cookieValue(request.headers[.cookie], name: Self.oidcCookieName)
            else { throw ATHError(.userAuthenticationFailed, "this sign-in is not the one this browser started; start again") }
            let ticket = try await service.oidcCallback(code: String(code), state: String(state), cookie: cookie)
            var response = Response(status: .found, headers: [.location: "/ath/console#enroll=\(ticket)"])
            response.headers[.setCookie] = self.oidcCookie("", maxAge: 0)
            return response
        }

        let api = console.group("api")
        api.get("config") { _, _ in try JSONResponse.make(["oidc": service.openID != nil]) }
        api.post("enroll") { request, _ in
            var request = request
            try Self.checkOrigin(request)
            let body = try await request.json(limit: limit).decode(EnrollBody.self)
            guard let spki = Base64URL.decode(body.public_key) else { throw ATHError(.malformedMessage, "public_key is not base64url") }
            let (user, kid) = try await service.enrollConsoleKey(token: body.token, publicKeySPKI: spki)
            return try JSONResponse.make(["did": user.value, "kid": kid], status: .created)
        }
        api.post("challenge") { request, _ in
            var request = request
            try Self.checkOrigin(request)
            let body = try await request.json(limit: limit).decode(ChallengeBody.self)
            return try JSONResponse.make(["challenge": try service.consoleChallenge(for: body.did), "server_did": service.identity.did.value])
        }
        api.post("login") { request, _ in
            var request = request
            try Self.checkOrigin(request)
            let body = try await request.json(limit: limit).decode(LoginBody.self)
            let (session, cookie) = try await service.consoleLogin(
                did: body.did, kid: body.kid, challenge: body.challenge, signature: body.signature)
            var response = try JSONResponse.make(Me(did: session.did, name: nil, csrf: session.csrf))
            response.headers[.setCookie] = self.cookie(cookie, maxAge: ATHService.consoleSessionSeconds)
            return response
        }
        api.get("me") { request, _ in
            let session = try await self.session(request, mutating: false)
            return try JSONResponse.make(Me(did: session.did, name: try await service.store.account(did: session.did)?.name, csrf: session.csrf))
        }
        api.get("pending") { request, _ in
            try JSONResponse.make(Requests(requests: try await service.consolePending(try await self.session(request, mutating: false))))
        }
        api.post("confirmations/:id") { request, context in
            var request = request
            let session = try await self.session(request, mutating: true)
            let id = try context.parameters.require("id")
            // Only the signed-in user's own requests; the signature check in step 7 would refuse
            // anyone else's anyway, but the console does not even look them up.
            guard try await service.consolePending(session).contains(where: { $0.request.request_id == id }) else {
                throw ATHError(.confirmationNotFound, "no pending request \(id.prefix(64)) of yours", step: 7)
            }
            return try JSONResponse.make(try await service.confirm(requestID: id, request.json(limit: limit)))
        }
        api.get("grants") { request, _ in
            try JSONResponse.make(Grants(grants: try await service.consoleGrants(try await self.session(request, mutating: false))))
        }
        api.post("grants/:id/revoke") { request, context in
            let session = try await self.session(request, mutating: true)
            let id = try context.parameters.require("id")
            try await service.consoleRevokeGrant(id, session: session)
            return try JSONResponse.make(Revoked(grant_id: id))
        }
        api.post("logout") { request, _ in
            try await service.consoleLogout(try await self.session(request, mutating: true))
            var response = try JSONResponse.make(["status": "signed out"])
            response.headers[.setCookie] = self.cookie("", maxAge: 0)
            return response
        }
    }

    static var oidcCookieName: String { "ath_oidc" }

    /// Lax, not Strict: the browser comes back from the provider in a cross-site navigation.
    func oidcCookie(_ value: String, maxAge: Int64) -> String {
        "\(Self.oidcCookieName)=\(value); Path=/ath/console/oidc; Max-Age=\(maxAge); HttpOnly; SameSite=Lax" + (secureCookies ? "; Secure" : "")
    }

    func cookie(_ value: String, maxAge: Int64) -> String {
        "\(Self.cookieName)=\(value); Path=/ath/console; Max-Age=\(maxAge); HttpOnly; SameSite=Strict" + (secureCookies ? "; Secure" : "")
    }

    /// The signed-in session; for requests that change something, also the CSRF token and origin.
    func session(_ request: Request, mutating: Bool) async throws -> ATHService.ConsoleSession {
        guard let value = Self.cookieValue(request.headers[.cookie]) else {
            throw ATHError(.userAuthenticationFailed, "sign in to the console first")
        }
        let session = try await service.consoleSession(cookie: value)
        if mutating {
            try Self.checkOrigin(request)
            guard let sent = request.headers[Self.csrfHeader], ConstantTime.equal(sent, session.csrf) else { throw ATHError(.csrfCheckFailed, "this request needs the session's X-ATH-CSRF token") }
        }
        return session
    }

    static func cookieValue(_ header: String?, name: String = cookieName) -> String? {
        guard let header else { return nil }
        for part in header.split(separator: ";") {
            let pair = part.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
            if pair.count == 2, pair[0] == name, !pair[1].isEmpty { return String(pair[1]) }
        }
        return nil
    }

    /// A browser names the page's origin on every POST; it must be this server's. Non-browser
    /// clients send none and are held by the CSRF token (which they cannot get without signing in).
    static func checkOrigin(_ request: Request) throws {
        guard let origin = request.headers[.origin] else { return }
        guard let host = request.head.authority,
            origin == "http://\(host)" || origin == "https://\(host)"
        else { throw ATHError(.csrfCheckFailed, "cross-origin request refused") }
    }

    static func asset(_ text: String, type: String) -> Response {
        Response(status: .ok, headers: [.contentType: type], body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

/// The console's protective headers, on every answer, errors included.
struct ConsoleHeadersMiddleware<Context: RequestContext>: RouterMiddleware {
    static var policy: String {
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
            + "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as any HTTPResponseError {
            response = try error.response(from: request, context: context)
        }
        response.headers[.contentSecurityPolicy] = Self.policy
        response.headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        response.headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
        response.headers[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
        response.headers[.cacheControl] = "no-store"
        return response
    }
}
