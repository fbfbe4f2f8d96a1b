import ATHCore
import ATHIdentity
import Foundation
import X509

/// Whether and how a service takes agents' certificates (ACPs CAI) as part of their identity.
/// The same trust verifies mutual-TLS client certificates (`ServerTLS`) and certificates sent in
/// step 3 `credentials` when TLS ends before this service.
public struct AgentCertificatePolicy: Sendable {
    public var trust: AgentTrust
    /// Refuse a handshake whose agent showed no valid certificate by the end of step 3.
    public var required: Bool

    public init(trust: AgentTrust, required: Bool) {
        self.trust = trust
        self.required = required
    }
}

extension ATHService {
    /// Binds a verified AIC to the handshake's client: the client's account must list the AIC
    /// among its external ids (an admin registers it), so a certificate for one agent never
    /// vouches for another DID. Refused with AGENT_IDENTITY_MISMATCH, the reference's HTTP 403.
    func bind(_ aic: AgentIdentityCode, to handshake: inout ServerHandshake, step: Int) async throws {
        guard let account = try await store.account(did: handshake.clientDID.value) else {
            throw ATHError(
                .agentIdentityMismatch, "the certificate names \(aic), but \(handshake.clientDID) has no account binding it", step: step)
        }
        guard account.holds(aic: aic) else {
            throw ATHError(.agentIdentityMismatch, "the certificate names \(aic), which is not an id of \(handshake.clientDID)", step: step)
        }
        if let bound = handshake.clientAIC, (try? AgentIdentityCode(parsing: bound)) != aic {
            throw ATHError(.agentIdentityMismatch, "the credentials name \(aic), but the TLS certificate named \(bound)", step: step)
        }
        handshake.bindAgentCertificate(aic: aic.description)
    }

    /// Step-3 `credentials`: base64 (RFC 4648 §4, as JWS x5c) DER certificates, leaf first. The
    /// leaf must verify as a client CAI and carry the key that signed steps 1 and 3, which is
    /// what proves the agent holds the certificate's private key.
    func verifyCredentials(_ raw: JSONValue, handshake: inout ServerHandshake, now: Date) async throws {
        let presented = (try? raw.decode(IdentityProof.self))?.credentials ?? []
        if !presented.isEmpty {
            guard let policy = agentCertificates else {
                throw ATHError(.unsupportedAlgorithm, "identity credentials (certificates) are not accepted by this server", step: 3)
            }
            let chain: [Certificate]
            do {
                chain = try presented.map { text in
                    guard let der = Data(base64Encoded: text) else {
                        throw IdentityError(.malformedCertificate, "each credential is a base64 DER certificate")
                    }
                    return try Certificate(derEncoded: Array(der))
                }
            } catch {
                throw ATHError(.agentCertificateInvalid, "unreadable credentials: \(error)", step: 3)
            }
            let verified: VerifiedAgentCertificate
            do {
                verified = try await policy.trust.verify(chain, role: .client, now: now)
            } catch {
                throw ATHError(.agentCertificateInvalid, "\(error)", step: 3)
            }
            guard let aic = verified.aic else { throw ATHError(.agentCertificateInvalid, "the certificate names no AIC", step: 3) }
            guard Certificate.PublicKey(handshake.clientKey) == verified.leaf.publicKey else {
                throw ATHError(.agentIdentityMismatch, "the certificate's key is not the key that signed this handshake", step: 3)
            }
            try await bind(aic, to: &handshake, step: 3)
        }
        if agentCertificates?.required == true, handshake.clientAIC == nil {
            throw ATHError(
                .agentCertificateInvalid,
                "this server requires an agent certificate: connect with a TLS client certificate or send it in credentials", step: 3)
        }
    }
}
