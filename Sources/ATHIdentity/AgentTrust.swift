import Foundation
import X509

/// What a server trusts agents' certificates by: the CASP roots and where revocation comes from.
/// Mutual TLS, step-3 credentials and the gateway all verify through one value of this type.
public struct AgentTrust: Sendable {
    public enum Revocation: Sendable {
        /// No revocation checking: only by an operator's explicit choice (`--no-crl`).
        case disabled
        case lists([CertificateRevocationList])
        /// CRL files read at every verification, so a list `ath ca revoke` just published counts
        /// from the next connection on; an unreadable file fails the verification.
        case files([URL])
    }

    public var roots: [Certificate]
    public var revocation: Revocation

    public init(roots: [Certificate], revocation: Revocation) {
        self.roots = roots
        self.revocation = revocation
    }

    /// Reads roots (a PEM bundle) and CRL files (PEM or DER) for a server's configuration.
    public static func load(rootsFile: String, crlFiles: [String]) throws -> AgentTrust {
        let trust = AgentTrust(
            roots: try Certificate.bundle(file: rootsFile),
            revocation: crlFiles.isEmpty ? .disabled : .files(crlFiles.map { URL(fileURLWithPath: $0) }))
        _ = try trust.currentRevocation()  // a bad CRL path is a start-up error, not a refusal later
        return trust
    }

    public func verify(_ presented: [Certificate], role: CertificateRole, now: Date) async throws -> VerifiedAgentCertificate {
        try await AgentCertificateVerifier(roots: roots, revocation: try currentRevocation(), role: role).verify(presented, now: now)
    }

    func currentRevocation() throws -> RevocationCheck {
        switch revocation {
        case .disabled: return .disabled
        case .lists(let lists): return .crls(lists)
        case .files(let files):
            return .crls(
                try files.map { url in
                    guard let data = try? Data(contentsOf: url) else {
                        throw IdentityError(.revocationUnknown, "cannot read the CRL \(url.path)")
                    }
                    if let text = String(data: data, encoding: .utf8), text.contains("-----BEGIN") {
                        return try CertificateRevocationList(pemEncoded: text)
                    }
                    return try CertificateRevocationList(derEncoded: Array(data))
                })
        }
    }
}
