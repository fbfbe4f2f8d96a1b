import ATHCore
import ATHStore
import Foundation
import HTTPTypes
import Hummingbird

/// The HTTP binding of the v0.1 API (docs/GATEWAY.md), as the official SDKs call it:
///
/// GET  /health                               200 {"status":"ok"}
/// GET  /.well-known/ath.json                 discovery
/// GET  /.well-known/ath-app.json             native-mode discovery (when a native app is set)
/// POST /ath/agents/register                  201 client_id, client_secret, approvals
/// GET  /ath/agents/{client_id}               its registration (HTTP Basic: client_id:client_secret)
/// POST /ath/authorize                        authorization_url, ath_session_id
/// GET  /ath/consent/{session}               the consent page (strict mode's authorization_url)
/// POST /ath/consent/{session}                303 to the provider (or to the agent's redirect, denied)
/// GET  /ath/callback                         302 to the agent's redirect
/// POST /ath/token                            the access token
/// ANY  /ath/proxy/{provider_id}/{path}       the upstream's answer
/// POST /ath/revoke                           200 {}
public struct OAuthAPIRoutes<Context: ATHRequestContextProtocol>: Sendable {
    let service: OAuthAPIService
    /// nil: no `/ath/proxy` route (another proxy forwards, `ExternalAuthorizationRoutes`).
    let forwarder: UpstreamForwarder?
    /// The scheme the gateway's clients use, for `X-Forwarded-Proto`.
    let scheme: String
    /// Where refusals are audited (in batches, as the handshake's are): nil, not audited.
    let refusals: RefusalAudit?
    /// Every v0.1 request body is a small JSON object.
    public static var bodyLimit: Int { 16 * 1024 }

    public init(service: OAuthAPIService, forwarder: UpstreamForwarder?, scheme: String, refusals: RefusalAudit? = nil) {
        self.service = service
        self.forwarder = forwarder
        self.scheme = scheme
        self.refusals = refusals
    }

    public func register(on router: Router<Context>) {
        let (service, forwarder, scheme) = (self.service, self.forwarder, self.scheme)
        // Cookies are Secure whenever the public URL is HTTPS.
        let secure = service.configuration.publicURL.hasPrefix("https://")
        let limit = Self.bodyLimit
        router.get("health") { _, _ in try JSONResponse.make(["status": "ok"]) }
        let wellKnown = router.group(".well-known").add(middleware: ErrorShapeMiddleware<Context>())
        wellKnown.get("ath.json") { _, _ in try JSONResponse.make(service.discovery) }
        if let app = service.nativeAppDocument {
            wellKnown.get("ath-app.json") { _, _ in try JSONResponse.make(app) }
        }
        let group = router.group("ath").add(middleware: RefusalRecorder<Context>(refusals: refusals, event: "oauth.refused"))
            .add(middleware: ErrorShapeMiddleware<Context>())
        group.post("agents/register") { request, _ in
            var request = request
            return try JSONResponse.make(try await service.register(request.json(limit: limit)), status: .created)
        }
        group.get("agents/:client_id") { request, context in
            let id = try context.parameters.require("client_id")
            guard let (caller, secret) = Self.basicCredentials(request.headers[.authorization]) else {
                throw ATHError(.invalidClient, "Authorization: Basic base64(client_id:client_secret) is required")
            }
            return try JSONResponse.make(try await service.registration(clientID: id, authenticatedAs: caller, secret: secret))
        }
        group.post("authorize") { request, _ in
            var request = request
            return try JSONResponse.make(try await service.authorize(request.json(limit: limit)))
        }
        group.get("callback") { request, _ in
            var query: [String: String] = [:]
            for (name, value) in request.uri.queryParameters where query[String(name)] == nil { query[String(name)] = String(value) }
            let cookies = request.headers[.cookie]
            var sessionID: String?
            let location = try await service.callback(query: query) { id in
                sessionID = id
                return ConsoleRoutes<Context>.cookieValue(cookies, name: ConsentPage.cookieName(id))
            }
            var response = Response(status: .found, headers: [.location: location, .cacheControl: "no-store"])
            if let sessionID { response.headers[.setCookie] = ConsentPage.cookie(sessionID, value: "", maxAge: 0, secure: secure) }
            return response
        }
        group.post("token") { request, _ in
            var request = request
            return try JSONResponse.make(try await service.token(request.json(limit: limit)))
        }
        group.post("revoke") { request, _ in
            var request = request
            try await service.revoke(request.json(limit: limit))
            return try JSONResponse.make([String: String]())
        }
        // The consent page (strict mode's authorization_url) and the user's answer to it.
        let consent = router.group("ath/consent").add(middleware: RefusalRecorder<Context>(refusals: refusals, event: "oauth.refused"))
            .add(middleware: ConsoleHeadersMiddleware<Context>()).add(middleware: ErrorShapeMiddleware<Context>())
        consent.get(":session") { _, context in
            let id = try context.parameters.require("session")
            let asked = try await service.consentRequest(sessionID: id)
            let binding = Nonce.generate(bytes: 32)
            let remaining = asked.expiresAt - Freshness.unix(service.clock())
            return Response(
                status: .ok,
                headers: [
                    .contentType: "text/html; charset=utf-8", .setCookie: ConsentPage.cookie(id, value: binding, maxAge: remaining, secure: secure),
                ],
                body: .init(byteBuffer: ByteBuffer(string: ConsentPage.html(asked, binding: binding))))
        }
        consent.post(":session") { request, context in
            let id = try context.parameters.require("session")
            try ConsoleRoutes<Context>.checkOrigin(request)
            let body = try await request.body.collect(upTo: 4096)
            let form: ConsentForm
            do {
                form = try URLEncodedFormDecoder().decode(ConsentForm.self, from: String(buffer: body))
            } catch {
                throw ATHError(.malformedMessage, "the consent form needs binding and decision (application/x-www-form-urlencoded)")
            }
            // The form's copy of the binding must be the cookie's: a page on another site can
            // post the form, but cannot read or send this cookie (SameSite=Lax).
            guard let cookie = ConsoleRoutes<Context>.cookieValue(request.headers[.cookie], name: ConsentPage.cookieName(id)),
                OpaqueSecret.matches(form.binding, digest: OpaqueSecret.digest(cookie))
            else { throw ATHError(.stateMismatch, "this browser did not open the consent page for this authorization") }
            guard form.decision == "approve" || form.decision == "deny" else {
                throw ATHError(.malformedMessage, "decision must be approve or deny")
            }
            let location = try await service.consent(sessionID: id, approve: form.decision == "approve", binding: cookie)
            return Response(status: .seeOther, headers: [.location: location])
        }

        guard let forwarder else { return }
        let proxy: @Sendable (Request, Context) async throws -> Response = { request, context in
            let (provider, path) = try Self.proxyTarget(request.uri.path)
            let admitted = try await service.admit(
                authorization: request.headers[.authorization], agentHeader: request.headers[Self.agentIDField], providerID: provider,
                method: request.method.rawValue, path: path)
            return try await forwarder.forward(
                request, path: path, to: admitted.provider.upstream, identity: .init(admitted.token),
                credential: HTTPField(name: .authorization, value: "Bearer " + admitted.grant.accessToken),
                remoteAddress: context.remoteAddress?.ipAddress, scheme: scheme)
        }
        for method: HTTPRequest.Method in [.get, .head, .post, .put, .patch, .delete, .options] {
            group.on("proxy/:provider_id", method: method, use: proxy)
            group.on("proxy/:provider_id/**", method: method, use: proxy)
        }
    }

    static var agentIDField: HTTPField.Name { .athAgentID }

    struct ConsentForm: Decodable {
        var binding: String
        var decision: String
    }

    /// The provider and the upstream path, from the raw (still percent-encoded) request path, so
    /// that what the operation map checks is byte for byte what is forwarded.
    static func proxyTarget(_ rawPath: String) throws -> (provider: String, path: String) {
        let prefix = "/ath/proxy/"
        guard rawPath.hasPrefix(prefix) else { throw ATHError(.malformedMessage, "not a proxy path") }
        let rest = rawPath.dropFirst(prefix.count)
        let provider = rest.prefix { $0 != "/" }
        let path = rest.dropFirst(provider.count)
        return (String(provider), path.isEmpty ? "/" : String(path))
    }

    /// `Basic base64(id:secret)` (RFC 7617); nil for anything else.
    static func basicCredentials(_ header: String?) -> (String, String)? {
        guard let header, header.count > 6, header.prefix(6).lowercased() == "basic ",
            let data = Data(base64Encoded: String(header.dropFirst(6)).trimmingCharacters(in: .whitespaces)),
            let text = String(data: data, encoding: .utf8), let colon = text.firstIndex(of: ":")
        else { return nil }
        return (String(text[..<colon]), String(text[text.index(after: colon)...]))
    }
}

extension HTTPField.Name {
    /// The v0.1 API's agent id, which a proxied request must send and which must match its token.
    public static let athAgentID = HTTPField.Name("X-ATH-Agent-ID")!
}

/// Records every refusal a route group answers with, as the handshake's refusals are recorded:
/// who asked (the peer's address), what (method and path), the code and its message.
struct RefusalRecorder<Context: ATHRequestContextProtocol>: RouterMiddleware {
    let refusals: RefusalAudit?
    let event: String

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as ATHError {
            refusals?.record(
                AuditEvent(
                    at: Int64(Date().timeIntervalSince1970), event: event, actor: context.remoteAddress?.ipAddress ?? "-",
                    subject: "\(request.method.rawValue) \(request.uri.path.prefix(512))", outcome: error.code.rawValue, detail: error.message))
            throw error
        }
    }
}
