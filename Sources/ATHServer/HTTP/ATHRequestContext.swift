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
/// Two references to immutable values the service already holds (the verified token's
/// claims, the session's grant): the request context carrying it is copied along the
/// middleware chain, and a struct of claims and grant would retain and release some twenty
/// strings and arrays at every copy, and be built anew for every request.
public struct VerifiedAccess: Sendable {
    let sharedClaims: Shared<AccessTokenClaims>
    let sharedGrant: Shared<Grant>
    public var claims: AccessTokenClaims { sharedClaims.value }
    public var grant: Grant { sharedGrant.value }

    public init(claims: AccessTokenClaims, grant: Grant) {
        self.init(claims: Shared(claims), grant: Shared(grant))
    }

    init(claims: Shared<AccessTokenClaims>, grant: Shared<Grant>) {
        sharedClaims = claims
        sharedGrant = grant
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

/// An immutable value behind one reference, for values that many requests read at once.
final class Shared<Value: Sendable>: Sendable {
    let value: Value

    init(_ value: Value) {
        self.value = value
    }
}
