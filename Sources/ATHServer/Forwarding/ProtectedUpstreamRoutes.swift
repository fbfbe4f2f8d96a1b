import ATHCore
import HTTPTypes
import Hummingbird

/// A service behind the gateway protected by the 9-step handshake: every request under
/// `/<mount>/` is checked exactly as `ATHAccessMiddleware` checks a route (token, proof of
/// possession, revocation, restrictions, rate), with the scope the service's operation map
/// names for its method and path, then forwarded to the upstream without the mount prefix.
public struct ProtectedUpstreamRoutes<Context: ATHRequestContextProtocol>: Sendable {
    let service: ATHService
    let forwarder: UpstreamForwarder
    let upstreams: [ProtectedService]
    let scheme: String

    public init(service: ATHService, forwarder: UpstreamForwarder, upstreams: [ProtectedService], scheme: String) {
        (self.service, self.forwarder, self.upstreams, self.scheme) = (service, forwarder, upstreams, scheme)
    }

    public func register(on router: Router<Context>) {
        let (service, forwarder, scheme) = (self.service, self.forwarder, self.scheme)
        for upstream in upstreams {
            let prefix = "/" + upstream.mount
            let handler: @Sendable (Request, Context) async throws -> Response = { request, context in
                // The raw path, still percent-encoded: what the map checks is what is forwarded.
                let raw = request.uri.path
                guard raw == prefix || raw.hasPrefix(prefix + "/") else {
                    throw ATHError(.malformedMessage, "the service's name must be written as it is configured, not percent-encoded")
                }
                let path = raw.count > prefix.count ? String(raw.dropFirst(prefix.count)) : "/"
                let (access, admitted) = try await service.admit(
                    request, remoteAddress: context.remoteAddress, operations: upstream.operations, path: path,
                    bodyLimit: upstream.upstream.maxRequestBody)
                return try await forwarder.forward(
                    admitted, path: path, to: upstream.upstream, identity: .init(access),
                    credential: upstream.credential, remoteAddress: context.remoteAddress?.ipAddress, scheme: scheme)
            }
            let group = router.group(RouterPath(upstream.mount)).add(middleware: ErrorShapeMiddleware<Context>())
            for method: HTTPRequest.Method in [.get, .head, .post, .put, .patch, .delete, .options] {
                group.on("", method: method, use: handler)
                group.on("**", method: method, use: handler)
            }
        }
    }
}

/// A service behind the 9-step handshake, as the gateway and the external authorization see it.
public struct ProtectedService: Sendable {
    /// The first path segment under which the gateway serves it.
    public var mount: String
    public var upstream: Upstream
    public var operations: OperationMap
    /// The upstream's own authentication, added to every forwarded request.
    public var credential: HTTPField?

    public init(mount: String, upstream: Upstream, operations: OperationMap, credential: HTTPField? = nil) {
        (self.mount, self.upstream, self.operations, self.credential) = (mount, upstream, operations, credential)
    }
}
