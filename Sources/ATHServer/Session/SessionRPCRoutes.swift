import ATHCore
import Foundation

/// RPC methods served over the encrypted session, each with the scope it needs, exactly as
/// HTTP routes carry theirs (`ATHAccessMiddleware(service, scope:)`): a call passes the same
/// grant checks as a request (`ATHService.authorizeCall`) before its handler runs.
public struct SessionRPCRoutes: Sendable {
    public typealias Handler = @Sendable (_ params: JSONValue, _ access: VerifiedAccess) async throws -> JSONValue

    var methods: [String: (scope: String, handler: Handler)] = [:]

    public init() {}

    public mutating func register(_ method: String, scope: String, _ handler: @escaping Handler) {
        precondition(SessionRPC.Message.validMethod(method), "bad RPC method name \(method)")
        methods[method] = (scope, handler)
    }

    /// Runs one `invoke` effect of `ServerSessionEndpoint`; the result goes to `answer`.
    public func run(method: String, params: JSONValue, access: VerifiedAccess, service: ATHService, remoteAddress: String?) async
        -> Result<JSONValue, ATHError>
    {
        guard let route = methods[method] else { return .failure(ATHError(.malformedMessage, "no RPC method '\(method)'")) }
        do {
            let admitted = try await service.authorizeCall(access, scope: route.scope, remoteAddress: remoteAddress)
            return .success(try await route.handler(params, admitted))
        } catch let error as ATHError {
            return .failure(error)
        } catch {
            return .failure(ATHError(.internalError, "the method failed"))
        }
    }

    /// Refusals after which no later call can succeed: the transport closes the session.
    public static func endsSession(_ error: ATHError) -> Bool {
        [.tokenRevoked, .grantExpired, .tokenExpired].contains(error.code)
    }
}
