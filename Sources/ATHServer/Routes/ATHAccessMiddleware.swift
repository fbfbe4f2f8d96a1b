import ATHCore
import HTTPTypes
import Hummingbird
import NIOCore

/// Guards routes with a scope: `router.group("api").add(middleware: ATHAccessMiddleware(service, scope: "goods:read"))`.
/// Admitted requests reach the handler with `context.ath` set; refused ones get the documented error.
///
/// `handle` is inlinable so that it is specialized for the application's context type, as
/// Hummingbird's own middleware chain is: unspecialized, every copy of the context and every
/// call of `next` would go through runtime type metadata, on every protected request. The
/// check itself is not generic (`ATHService.admit`).
public struct ATHAccessMiddleware<Context: ATHRequestContextProtocol>: RouterMiddleware {
    @usableFromInline let service: ATHService
    @usableFromInline let scope: String
    /// Bodies of protected requests are hashed for the proof; larger ones are refused.
    @usableFromInline let bodyLimit: Int

    public init(_ service: ATHService, scope: String, bodyLimit: Int = ATHService.defaultBodyLimit) {
        self.service = service
        self.scope = scope
        self.bodyLimit = bodyLimit
    }

    @inlinable
    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let (access, request) = try await service.admit(request, remoteAddress: context.remoteAddress, scope: scope, bodyLimit: bodyLimit)
        var context = context
        context.ath = access
        return try await next(request, context)
    }
}

extension ATHService {
    /// The access check of one HTTP request: its body is read (up to `bodyLimit`, for the
    /// proof's digest) and the request returned with the body still readable by the handler.
    public func admit(
        _ request: Request, remoteAddress: SocketAddress?, scope: String?, bodyLimit: Int = ATHService.defaultBodyLimit
    ) async throws -> (VerifiedAccess, Request) {
        try await admit(request, remoteAddress: remoteAddress, bodyLimit: bodyLimit) { _ in scope }
    }

    /// The same check for a service behind the gateway: the scope is the one of the token's that
    /// `operations` says admits this method on `path` (OPERATION_NOT_MAPPED when no route covers
    /// it, SCOPE_INSUFFICIENT when the token holds none of the scopes that do), decided before
    /// any body is read.
    public func admit(
        _ request: Request, remoteAddress: SocketAddress?, operations: OperationMap, path: String, bodyLimit: Int
    ) async throws -> (VerifiedAccess, Request) {
        try await admit(request, remoteAddress: remoteAddress, bodyLimit: bodyLimit) { claims in
            try operations.authorize(method: request.method.rawValue, path: path, held: claims.scope.split(separator: " ").lazy.map(String.init))
        }
    }

    private func admit(
        _ request: Request, remoteAddress: SocketAddress?, bodyLimit: Int, scope choose: (AccessTokenClaims) throws -> String?
    ) async throws -> (VerifiedAccess, Request) {
        // One pass over the fields: HTTPFields' subscript joins every field of a name into a new
        // string, a copy of the 700-byte token on every request. A second Authorization or
        // ATH-Proof field is refused rather than joined or ignored.
        var (authorization, proof, hasBody): (String?, String?, Bool) = (nil, nil, false)
        for field in request.headers {
            switch field.name {
            case .authorization:
                guard authorization == nil else { throw refused(request, remoteAddress, ATHError(.tokenInvalid, "more than one Authorization header")) }
                authorization = field.value
            case Self.proofField:
                guard proof == nil else {
                    throw refused(request, remoteAddress, ATHError(.proofInvalid, "more than one \(PossessionProof.header) header"))
                }
                proof = field.value
            // A request with neither Content-Length nor Transfer-Encoding has no body (RFC 9112
            // section 6.3); not waiting on its empty body stream saves a trip through the event loop.
            case .contentLength, .transferEncoding: hasBody = true
            default: break
            }
        }
        // The token is checked before a byte of the body is read: a client without a valid
        // token makes the server buffer nothing (the body is needed only for the proof).
        let now = clock()
        let known: Known
        let scope: String?
        do {
            known = try await knownAccess(authorization: authorization, now: now)
            scope = try choose(known.token.claims)
        } catch let error as ATHError {
            throw refused(request, remoteAddress, error)
        }
        var request = request
        var body = ByteBuffer()
        if hasBody {
            do {
                body = try await request.collectBody(upTo: bodyLimit)
            } catch {
                throw refused(request, remoteAddress, ATHError(.payloadTooLarge, "request body is over \(bodyLimit) bytes"))
            }
        }
        let facts = RequestFacts(
            method: request.method.rawValue, target: request.uri.description, authorization: authorization, proof: proof,
            body: Array(body.readableBytesView), remoteSocket: remoteAddress)
        do {
            return (try await decide(facts, known, scope: scope, now: now), request)
        } catch let error as ATHError {
            throw refused(request, remoteAddress, error)
        }
    }

    private func refused(_ request: Request, _ remoteAddress: SocketAddress?, _ error: ATHError) -> ATHError {
        recordRefusal(error, method: request.method.rawValue, target: request.uri.description, remoteAddress: remoteAddress?.ipAddress, now: clock())
        return error
    }

    static let proofField = HTTPField.Name(PossessionProof.header)!
}
