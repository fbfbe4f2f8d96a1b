import ATHCore
import Crypto
import Foundation
import X509

/// A CASP: a root that signs only an intermediate, and the intermediate that signs agents'
/// certificates and the CRL. Pure: keys, dates and serials come in, certificates go out;
/// `CertificateAuthorityFolder` keeps them on disk for `ath ca`.
public struct CertificateAuthority: Sendable {
    public let root: Certificate
    public let intermediate: Certificate
    let rootKey: Certificate.PrivateKey
    let intermediateKey: Certificate.PrivateKey

    public init(root: Certificate, rootKey: Certificate.PrivateKey, intermediate: Certificate, intermediateKey: Certificate.PrivateKey) throws {
        guard rootKey.publicKey == root.publicKey, intermediateKey.publicKey == intermediate.publicKey else {
            throw IdentityError(.authority, "a CA key does not match its certificate")
        }
        guard intermediate.issuer == root.subject, root.publicKey.isValidSignature(intermediate.signature, for: intermediate) else {
            throw IdentityError(.authority, "the intermediate was not issued by this root")
        }
        self.root = root
        self.rootKey = rootKey
        self.intermediate = intermediate
        self.intermediateKey = intermediateKey
    }

    /// 159 random bits as a positive integer of exactly 20 octets. RFC 5280 §4.1.2.2 allows at
    /// most 20; swift-certificates' default draws 20 random bytes, and when the first has its
    /// high bit set DER needs a 21st (a leading zero) to keep the integer positive, about half
    /// the time. Here the first byte's high bit is clear and the next one set.
    public static func newSerialNumber() -> Certificate.SerialNumber {
        var bytes = SymmetricKey(size: .init(bitCount: 160)).withUnsafeBytes { Array($0) }
        bytes[0] = (bytes[0] & 0x7F) | 0x40
        return Certificate.SerialNumber(bytes: bytes)
    }

    /// A new root (10 years) and intermediate (5 years, path length 0), both P-256.
    public static func create(name: String, now: Date) throws -> CertificateAuthority {
        let rootKey = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let intermediateKey = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let rootName = try DistinguishedName {
            CommonName("\(name) Root CA")
            OrganizationName(name)
        }
        let intermediateName = try DistinguishedName {
            CommonName("\(name) Intermediate CA")
            OrganizationName(name)
        }
        let start = now.addingTimeInterval(-300)
        let root = try Certificate(
            version: .v3, serialNumber: Self.newSerialNumber(), publicKey: rootKey.publicKey, notValidBefore: start,
            notValidAfter: now.addingTimeInterval(10 * 365 * 86_400), issuer: rootName, subject: rootName,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 1))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: rootKey.publicKey)
            }, issuerPrivateKey: rootKey)
        let intermediate = try Certificate(
            version: .v3, serialNumber: Self.newSerialNumber(), publicKey: intermediateKey.publicKey, notValidBefore: start,
            notValidAfter: now.addingTimeInterval(5 * 365 * 86_400), issuer: rootName, subject: intermediateName,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: intermediateKey.publicKey)
                AuthorityKeyIdentifier(keyIdentifier: SubjectKeyIdentifier(hash: rootKey.publicKey).keyIdentifier)
            }, issuerPrivateKey: rootKey)
        return try CertificateAuthority(root: root, rootKey: rootKey, intermediate: intermediate, intermediateKey: intermediateKey)
    }

    /// What a certificate is for and who it names.
    public struct Request: Sendable {
        public var aic: AgentIdentityCode?
        public var role: CertificateRole
        public var publicKey: Certificate.PublicKey
        public var dnsNames: [String]
        public var ipAddresses: [String]
        public var validity: TimeInterval

        public init(
            aic: AgentIdentityCode?, role: CertificateRole, publicKey: Certificate.PublicKey, dnsNames: [String] = [],
            ipAddresses: [String] = [], validity: TimeInterval = AgentCertificateProfile.defaultValidity
        ) {
            self.aic = aic
            self.role = role
            self.publicKey = publicKey
            self.dnsNames = dnsNames
            self.ipAddresses = ipAddresses
            self.validity = validity
        }

        /// The key and the name of a CSR whose signature is valid. A CSR naming a different AIC
        /// than the one asked for is refused rather than silently renamed.
        public init(csr: CertificateSigningRequest, aic: AgentIdentityCode?, role: CertificateRole) throws {
            guard csr.publicKey.isValidSignature(csr.signature, for: csr) else {
                throw IdentityError(.malformedCSR, "the CSR's signature does not verify with its own key")
            }
            var named = aic
            for rdn in csr.subject {
                for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                    guard let cn = String(attribute.value) else { continue }
                    if let parsed = try? AgentIdentityCode(parsing: cn) {
                        if let aic, aic != parsed {
                            throw IdentityError(.identityMismatch, "the CSR names \(parsed), not \(aic)")
                        }
                        named = parsed
                    }
                }
            }
            self.init(aic: named, role: role, publicKey: csr.publicKey)
        }
    }

    /// Issues a leaf under the intermediate with the CAI profile. A client certificate must name
    /// an AIC; a server certificate may instead carry only DNS names and addresses.
    public func issue(_ request: Request, serialNumber: Certificate.SerialNumber = newSerialNumber(), crlURL: String?, now: Date) throws
        -> Certificate
    {
        if request.role == .client, request.aic == nil {
            throw IdentityError(.profileViolation, "a client certificate names the agent's AIC")
        }
        guard request.validity > 0, request.validity <= 825 * 86_400 else {
            throw IdentityError(.profileViolation, "validity must be between 1 second and 825 days")
        }
        let notAfter = min(now.addingTimeInterval(request.validity), intermediate.notValidAfter)
        return try Certificate(
            version: .v3, serialNumber: serialNumber, publicKey: request.publicKey, notValidBefore: now.addingTimeInterval(-60),
            notValidAfter: notAfter, issuer: intermediate.subject,
            subject: try AgentCertificateProfile.subject(aic: request.aic, fallback: request.dnsNames.first ?? request.ipAddresses.first),
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try AgentCertificateProfile.extensions(
                aic: request.aic, role: request.role, publicKey: request.publicKey, issuer: intermediate, dnsNames: request.dnsNames,
                ipAddresses: request.ipAddresses, crlURL: crlURL),
            issuerPrivateKey: intermediateKey)
    }

    /// The intermediate's CRL listing `entries`, valid from now for `validity` (7 days by default).
    public func revocationList(entries: [CertificateRevocationList.Entry], number: Int, now: Date, validity: TimeInterval = 7 * 86_400)
        throws -> CertificateRevocationList
    {
        try CertificateRevocationList.sign(
            issuer: intermediate, key: intermediateKey, entries: entries, crlNumber: number, thisUpdate: now,
            nextUpdate: now.addingTimeInterval(validity))
    }

    /// The root's CRL: the intermediates it revoked (normally none). Without it an intermediate
    /// whose key leaked could not be withdrawn short of replacing the root everywhere.
    public func rootRevocationList(entries: [CertificateRevocationList.Entry], number: Int, now: Date, validity: TimeInterval = 7 * 86_400)
        throws -> CertificateRevocationList
    {
        try CertificateRevocationList.sign(
            issuer: root, key: rootKey, entries: entries, crlNumber: number, thisUpdate: now, nextUpdate: now.addingTimeInterval(validity))
    }

    /// The chain a leaf's owner presents after its own certificate: the intermediate.
    public var issuingChain: [Certificate] { [intermediate] }
}
