import ATHCore
import Hummingbird
import NIOCore

/// What a protected route may need: the peer's address (for ip_whitelist) and, once the access
/// middleware admitted the request, the verified access.
public protocol ATHRequestContextProtocol: RequestContext {
    var remoteAddress: SocketAddress? { get }
    var ath: VerifiedAccess? { get set }
}

public struct ATHRequestContext: ATHRequestContextProtocol, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?
    public var ath: VerifiedAccess?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }

    /// Handshake messages are small; anything larger is refused before parsing.
    public var maxUploadSize: Int { 64 * 1024 }
}

/// A request the access middleware admitted: the token's claims and the grant behind it.
public struct VerifiedAccess: Sendable {
    public var claims: AccessTokenClaims
    public var grant: Grant

    /// Application-reported amount check (order_amount_limit): throws AMOUNT_LIMIT_EXCEEDED.
    public func checkAmount(_ amount: Double) throws {
        try grant.restrictions.checkAmount(amount)
    }
}

extension ATHRequestContextProtocol {
    /// The verified access, or TOKEN_MISSING if a route forgot its middleware: fail closed.
    public func requireAccess() throws -> VerifiedAccess {
        guard let ath else { throw ATHError(.tokenMissing, "this route requires ATH access") }
        return ath
    }
}
