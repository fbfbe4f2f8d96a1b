import ATHCore
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// The gateway's check without the gateway's forwarding, for a proxy a platform already runs:
/// the proxy asks about each request and forwards it itself (docs/GATEWAY.md, "nginx and Envoy").
///
/// GET  /ath/authz/nginx            nginx `auth_request`: the request in `X-Original-Method`,
///                                  `X-Original-URI` and its own headers; no body.
/// ANY  /ath/authz/envoy/{path}     Envoy's HTTP external authorization: the request's method,
///                                  path and headers as they are, the body when Envoy sends it
///                                  (`with_request_body`).
///
/// Admitted: 200 with the identity fields the gateway would send upstream (`X-ATH-Agent`,
/// `X-ATH-User`, `X-ATH-Scopes`, `X-ATH-Grant`) and, for a v0.1 provider,
/// `X-ATH-Upstream-Authorization` (the provider's token, for the proxy to pass on). Refused:
/// Envoy gets the error's own status and JSON body; nginx, which treats anything but 2xx, 401
/// and 403 as its own failure, gets 401 or 403 with the real status in `X-ATH-Status` and the
/// JSON body in `X-ATH-Error`, from which its configuration answers the client.
///
/// The check is the one code path every way in shares: `ATHService.admit` with the operation
/// map's scope for services behind the handshake, `OAuthAPIService.admit` for v0.1 providers.
/// A proof covers the body's digest; nginx gives the subrequest no body, so through nginx only
/// requests without one pass the proof check (route requests with bodies through `ath gateway`,
/// or use Envoy with `with_request_body`).
public struct ExternalAuthorizationRoutes<Context: ATHRequestContextProtocol>: Sendable {
    let service: ATHService
    let oauth: OAuthAPIService?
    /// Services behind the handshake, by the first path segment they are served under.
    let protected: [String: ProtectedService]

    public init(service: ATHService, oauth: OAuthAPIService?, protected: [ProtectedService]) {
        self.service = service
        self.oauth = oauth
        self.protected = Dictionary(protected.map { ($0.mount, $0) }, uniquingKeysWith: { a, _ in a })
    }

    public func register(on router: Router<Context>) {
        let me = self
        let nginx: @Sendable (Request, Context) async throws -> Response = { request, context in
            do {
                guard let method = request.headers[.originalMethod], let uri = request.headers[.originalURI] else {
                    throw ATHError(.malformedMessage, "the proxy must send X-Original-Method and X-Original-URI")
                }
                return try await me.allowed(me.check(
                    method: method, uri: uri, headers: request.headers, body: ByteBuffer(), remote: me.remote(request, context)))
            } catch let error as ATHError {
                return try Self.refusedForNginx(error)
            }
        }
        let envoy: @Sendable (Request, Context) async throws -> Response = { request, context in
            do {
                var request = request
                let prefix = "/ath/authz/envoy"
                let uri = request.uri.description
                let original = uri.count > prefix.count ? String(uri.dropFirst(prefix.count)) : "/"
                let body = try await request.collectBody(upTo: ATHService.defaultBodyLimit)
                return try await me.allowed(me.check(
                    method: request.method.rawValue, uri: original, headers: request.headers, body: body, remote: me.remote(request, context)))
            } catch let error as ATHError {
                return try error.response(from: request, context: context)
            }
        }
        for method: HTTPRequest.Method in [.get, .head, .post, .put, .patch, .delete, .options] {
            router.on("ath/authz/nginx", method: method, use: nginx)
            router.on("ath/authz/envoy", method: method, use: envoy)
            router.on("ath/authz/envoy/**", method: method, use: envoy)
        }
    }

    struct Allowed {
        var identity: UpstreamForwarder.Identity
        var upstreamAuthorization: String?
    }

    /// The decision for one request as the client sent it.
    func check(method: String, uri: String, headers: HTTPFields, body: ByteBuffer, remote: SocketAddress?) async throws -> Allowed {
        let path = String(uri.prefix { $0 != "?" })
        if path.hasPrefix("/ath/proxy/") {
            guard let oauth else { throw ATHError(.providerNotApproved, "this gateway serves no v0.1 provider") }
            let (provider, rest) = try OAuthAPIRoutes<Context>.proxyTarget(path)
            let admitted = try await oauth.admit(
                authorization: headers[.authorization], agentHeader: headers[.athAgentID], providerID: provider, method: method, path: rest)
            return Allowed(identity: .init(admitted.token), upstreamAuthorization: "Bearer " + admitted.grant.accessToken)
        }
        let mount = path.dropFirst().prefix { $0 != "/" }
        guard let upstream = protected[String(mount)] else {
            throw ATHError(.operationNotMapped, "no service of this gateway is served under /\(mount.prefix(64))")
        }
        let rest = path.count > mount.count + 1 ? String(path.dropFirst(mount.count + 1)) : "/"
        var fields = headers
        fields[.contentLength] = body.readableBytes > 0 ? String(body.readableBytes) : nil
        let original = Request(
            head: HTTPRequest(method: HTTPRequest.Method(method) ?? .get, scheme: nil, authority: nil, path: uri, headerFields: fields),
            body: RequestBody(buffer: body))
        let (access, _) = try await service.admit(
            original, remoteAddress: remote, operations: upstream.operations, path: rest, bodyLimit: upstream.upstream.maxRequestBody)
        return Allowed(identity: .init(access), upstreamAuthorization: nil)
    }

    func allowed(_ allowed: Allowed) -> Response {
        var headers: HTTPFields = [.cacheControl: "no-store"]
        for (name, value) in allowed.identity.fields { headers[name] = value }
        if let authorization = allowed.upstreamAuthorization { headers[.athUpstreamAuthorization] = authorization }
        return Response(status: .ok, headers: headers)
    }

    /// The client's address as the proxy reports it (`X-Real-IP`), for ip_whitelist: this
    /// endpoint is for the proxy alone to reach (docs/GATEWAY.md).
    func remote(_ request: Request, _ context: Context) -> SocketAddress? {
        if let real = request.headers[.realIP], let address = try? SocketAddress(ipAddress: real, port: 0) { return address }
        return context.remoteAddress
    }

    static func refusedForNginx(_ error: ATHError) throws -> Response {
        let body = String(decoding: try CanonicalJSON.bytes(of: ATHErrorBody(error)), as: UTF8.self)
        var headers: HTTPFields = [.contentType: "application/json", .athStatus: String(error.httpStatus), .athError: body]
        if error.httpStatus == 401 { headers[.wwwAuthenticate] = "ATH realm=\"ath\", error=\"\(error.code.rawValue)\"" }
        return Response(status: error.httpStatus == 401 ? .unauthorized : .forbidden, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}

extension HTTPField.Name {
    static let originalMethod = HTTPField.Name("X-Original-Method")!
    static let originalURI = HTTPField.Name("X-Original-URI")!
    static let realIP = HTTPField.Name("X-Real-IP")!
    /// The refusal's real status and body, for a proxy that passes on only 401 and 403.
    public static let athStatus = HTTPField.Name("X-ATH-Status")!
    public static let athError = HTTPField.Name("X-ATH-Error")!
    /// What the proxy sends upstream as Authorization for a v0.1 provider: the user's provider token.
    public static let athUpstreamAuthorization = HTTPField.Name("X-ATH-Upstream-Authorization")!
}
