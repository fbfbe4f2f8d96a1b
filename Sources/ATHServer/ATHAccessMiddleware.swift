import ATHCore
import HTTPTypes
import Hummingbird
import NIOCore

/// Guards routes with a scope: `router.group("api").add(middleware: ATHAccessMiddleware(service, scope: "goods:read"))`.
/// Admitted requests reach the handler with `context.ath` set; refused ones get the documented error.
public struct ATHAccessMiddleware<Context: ATHRequestContextProtocol>: RouterMiddleware {
    let service: ATHService
    let scope: String
    /// Bodies of protected requests are hashed for the proof; larger ones are refused.
    let bodyLimit: Int

    public init(_ service: ATHService, scope: String, bodyLimit: Int = 1024 * 1024) {
        self.service = service
        self.scope = scope
        self.bodyLimit = bodyLimit
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let (access, request) = try await Self.admit(request, context: context, service: service, scope: scope, bodyLimit: bodyLimit)
        var context = context
        context.ath = access
        return try await next(request, context)
    }

    static func admit(
        _ request: Request, context: Context, service: ATHService, scope: String?, bodyLimit: Int = 1024 * 1024
    ) async throws -> (VerifiedAccess, Request) {
        var request = request
        var body = ByteBuffer()
        // A request with neither Content-Length nor Transfer-Encoding has no body (RFC 9112
        // section 6.3); not waiting on its empty body stream saves a trip through the event loop.
        if request.headers[.contentLength] != nil || request.headers[.transferEncoding] != nil {
            do {
                body = try await request.collectBody(upTo: bodyLimit)
            } catch {
                throw ATHError(.payloadTooLarge, "request body is over \(bodyLimit) bytes")
            }
        }
        let facts = ATHService.RequestFacts(
            method: request.method.rawValue, target: request.uri.description, authorization: request.headers[.authorization],
            proof: request.headers[HTTPField.Name(PossessionProof.header)!], body: Array(body.readableBytesView),
            remoteAddress: context.remoteAddress?.ipAddress)
        return (try await service.authorize(facts, scope: scope), request)
    }
}
