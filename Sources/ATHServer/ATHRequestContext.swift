import ATHCore
import ATHIdentity
import Hummingbird
import NIOCore
import NIOSSL
import X509

/// What a protected route may need: the peer's address (for ip_whitelist) and, once the access
/// middleware admitted the request, the verified access.
public protocol ATHRequestContextProtocol: RequestContext {
    var remoteAddress: SocketAddress? { get }
    var ath: VerifiedAccess? { get set }
    /// The AIC of the agent's TLS client certificate, which the TLS layer verified (`ServerTLS`);
    /// nil on a connection without one. Step 1 binds the handshake to it.
    func peerAgentIdentity() async throws -> AgentIdentityCode?
}

extension ATHRequestContextProtocol {
    public func peerAgentIdentity() async throws -> AgentIdentityCode? { nil }
}

public struct ATHRequestContext: ATHRequestContextProtocol, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?
    public var ath: VerifiedAccess?
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
        channel = source.channel
    }

    public func peerAgentIdentity() async throws -> AgentIdentityCode? {
        // A plain connection has no TLS handler: no certificate, not an error.
        guard let presented = try? await channel.nioSSL_peerCertificate().get() else { return nil }
        do {
            return try AgentCertificateProfile.check(try Certificate(derEncoded: try presented.toDERBytes()), role: .client)
        } catch {
            throw ATHError(.agentCertificateInvalid, "the TLS client certificate is not a CAI: \(error)")
        }
    }

    /// Handshake messages are small; anything larger is refused before parsing.
    public var maxUploadSize: Int { 64 * 1024 }
}

/// A request the access middleware admitted: the token's claims and the grant behind it.
///
/// One reference to shared, immutable storage: the request context carrying it is copied
/// along the middleware chain, and a struct of claims and grant would retain and release
/// some twenty strings and arrays at every copy.
public struct VerifiedAccess: Sendable {
    final class Storage: Sendable {
        let claims: AccessTokenClaims
        let grant: Grant

        init(claims: AccessTokenClaims, grant: Grant) {
            self.claims = claims
            self.grant = grant
        }
    }

    let storage: Storage
    public var claims: AccessTokenClaims { storage.claims }
    public var grant: Grant { storage.grant }

    public init(claims: AccessTokenClaims, grant: Grant) {
        storage = Storage(claims: claims, grant: grant)
    }

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
