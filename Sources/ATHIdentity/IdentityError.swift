/// Why a certificate, a chain, a CRL or the CA's own files were refused. Each kind names one
/// failure a test or an operator can tell apart; the server turns them into the protocol's
/// AGENT_CERTIFICATE_INVALID / AGENT_IDENTITY_MISMATCH with this message.
public struct IdentityError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, Equatable {
        case malformedCertificate = "malformed_certificate"
        case malformedCRL = "malformed_crl"
        case malformedCSR = "malformed_csr"
        /// The certificate does not follow the CAI profile (CN, SAN, EKU, constraints).
        case profileViolation = "profile_violation"
        /// No valid chain to a trusted root (unknown CA, bad signature, expired, not yet valid).
        case untrusted = "untrusted"
        case revoked = "revoked"
        /// The issuer's CRL is missing, stale or not signed by the issuer: fail closed.
        case revocationUnknown = "revocation_unknown"
        /// The certificate is for the other TLS role.
        case wrongUsage = "wrong_usage"
        /// The certificate's AIC is not the identity the peer claims.
        case identityMismatch = "identity_mismatch"
        /// The CA folder is missing, incomplete or inconsistent.
        case authority = "authority"
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { "\(kind.rawValue): \(message)" }
}
