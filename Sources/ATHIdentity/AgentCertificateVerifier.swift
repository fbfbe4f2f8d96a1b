import ATHCore
import Foundation
import SwiftASN1
@_spi(FixedExpiryValidationTime) import X509

/// A certificate chain that passed: the AIC it names and the validated chain, leaf first.
public struct VerifiedAgentCertificate: Sendable {
    public let aic: AgentIdentityCode?
    public let chain: [Certificate]
    public var leaf: Certificate { chain[0] }
}

/// How revocation is checked. There is no silent middle: either every leaf's issuer must have a
/// fresh CRL it signed, or revocation checking was explicitly turned off.
public enum RevocationCheck: Sendable {
    case disabled
    case crls([CertificateRevocationList])
}

/// Verifies a peer's CAI chain: the profile for the expected role, a path to one of the trusted
/// roots (signatures, validity at `now`, CA constraints, via swift-certificates' RFC 5280
/// policy), then revocation against the issuer's CRL. The same check serves mutual TLS, the
/// step-3 `credentials` of a handshake and the gateway.
public struct AgentCertificateVerifier: Sendable {
    public var roots: [Certificate]
    public var revocation: RevocationCheck
    public var role: CertificateRole

    public init(roots: [Certificate], revocation: RevocationCheck, role: CertificateRole = .client) {
        self.roots = roots
        self.revocation = revocation
        self.role = role
    }

    public func verify(_ presented: [Certificate], now: Date) async throws -> VerifiedAgentCertificate {
        guard let leaf = presented.first else { throw IdentityError(.untrusted, "no certificate was presented") }
        let aic = try AgentCertificateProfile.check(leaf, role: role)
        if now > leaf.notValidAfter {
            throw IdentityError(.untrusted, "the certificate expired at \(leaf.notValidAfter)")
        }
        if now < leaf.notValidBefore {
            throw IdentityError(.untrusted, "the certificate is not valid before \(leaf.notValidBefore)")
        }
        var verifier = Verifier(rootCertificates: CertificateStore(roots)) {
            RFC5280Policy(fixedExpiryValidationTime: now)
            LeafUsagePolicy(role: role)
        }
        let result = await verifier.validate(leaf: leaf, intermediates: CertificateStore(presented.dropFirst()))
        let chain: [Certificate]
        switch result {
        case .validCertificate(let validated): chain = Array(validated)
        case .couldNotValidate(let failures):
            let reasons = failures.map { String(describing: $0.policyFailureReason) }
            throw IdentityError(
                .untrusted,
                reasons.isEmpty
                    ? "no chain from this certificate to a trusted CA" : "no acceptable chain: \(reasons.joined(separator: "; "))")
        }
        try checkRevocation(chain, now: now)
        return VerifiedAgentCertificate(aic: aic, chain: chain)
    }

    /// Each certificate below the root is looked up in its issuer's CRL. The leaf's issuer must
    /// have one (fail closed); a CA certificate is checked when its issuer's CRL is configured.
    func checkRevocation(_ chain: [Certificate], now: Date) throws {
        guard case .crls(let lists) = revocation else { return }
        for index in 0..<(chain.count - 1) {
            let certificate = chain[index]
            let issuer = chain[index + 1]
            let fromIssuer = lists.filter { $0.issuer == issuer.subject }
            guard let crl = fromIssuer.max(by: { $0.crlNumber < $1.crlNumber }) else {
                if index == 0 { throw IdentityError(.revocationUnknown, "no CRL from \(issuer.subject) is configured") }
                continue
            }
            guard crl.isSigned(by: issuer) else {
                throw IdentityError(.revocationUnknown, "the CRL of \(issuer.subject) is not signed by it")
            }
            guard now < crl.nextUpdate else {
                throw IdentityError(.revocationUnknown, "the CRL of \(issuer.subject) went stale at \(crl.nextUpdate)")
            }
            if let entry = crl.revocation(of: certificate.serialNumber) {
                throw IdentityError(
                    .revoked, "certificate \(certificate.serialNumber.hex) was revoked at \(entry.revocationDate) (\(entry.reason.name))")
            }
        }
    }
}

/// The leaf's critical extendedKeyUsage is enforced here (the profile check already required
/// exactly the expected purpose), so swift-certificates' verifier may accept it as handled.
struct LeafUsagePolicy: VerifierPolicy {
    let role: CertificateRole
    var verifyingCriticalExtensions: [ASN1ObjectIdentifier] { [.X509ExtensionID.extendedKeyUsage] }

    func chainMeetsPolicyRequirements(chain: UnverifiedCertificateChain) async -> PolicyEvaluationResult {
        guard let eku = try? chain.leaf.extensions.extendedKeyUsage, eku.contains(role.usage) else {
            return .failsToMeetPolicy(reason: "the leaf is not for TLS \(role.rawValue) authentication")
        }
        return .meetsPolicy
    }
}
