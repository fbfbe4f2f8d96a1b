import ATHCore
import Foundation
import SwiftASN1
import X509

#if canImport(Glibc)
    import Glibc
#endif

/// Which side of a TLS connection a certificate may authenticate. ACPs issues one certificate
/// per role (exactly one EKU), so an agent's client certificate cannot serve, and the reverse.
public enum CertificateRole: String, Sendable, Hashable, CaseIterable, Codable {
    case client, server

    var usage: ExtendedKeyUsage.Usage { self == .client ? .clientAuth : .serverAuth }
}

/// The CAI profile of ACPs (../shared/reference/acps-identity.md): what a certificate of agent
/// identity holds, written once for the CA that issues it and for every peer that checks it.
public enum AgentCertificateProfile {
    /// The default validity of a CAI.
    public static let defaultValidity: TimeInterval = 49 * 86_400
    /// The scheme of the SAN URI naming the agent.
    public static let uriScheme = "acps://"

    /// The extensions of a leaf: critical CA:false, critical digitalSignature + keyEncipherment,
    /// one critical EKU, SKI/AKI, the SAN URI `acps://AIC` plus any DNS names and IP addresses,
    /// and the CRL distribution point when the CA publishes one.
    public static func extensions(
        aic: AgentIdentityCode?, role: CertificateRole, publicKey: Certificate.PublicKey, issuer: Certificate,
        dnsNames: [String] = [], ipAddresses: [String] = [], crlURL: String? = nil
    ) throws -> Certificate.Extensions {
        var names: [GeneralName] = []
        if let aic { names.append(.uniformResourceIdentifier(uriScheme + aic.description)) }
        names += dnsNames.map(GeneralName.dnsName)
        for ip in ipAddresses {
            guard let bytes = ipBytes(ip) else { throw IdentityError(.profileViolation, "'\(ip)' is not an IPv4 or IPv6 address") }
            names.append(.ipAddress(ASN1OctetString(contentBytes: bytes[...])))
        }
        guard !names.isEmpty else { throw IdentityError(.profileViolation, "a certificate needs an AIC or at least one DNS name or IP") }
        guard let issuerKeyID = try issuer.extensions.subjectKeyIdentifier?.keyIdentifier else {
            throw IdentityError(.authority, "the issuing CA certificate has no subject key identifier")
        }
        let san = names
        let distribution = try crlURL.map(crlDistributionPoint)
        return try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
            Critical(try ExtendedKeyUsage([role.usage]))
            SubjectKeyIdentifier(hash: publicKey)
            AuthorityKeyIdentifier(keyIdentifier: issuerKeyID)
            SubjectAlternativeNames(san)
            if let distribution { distribution }
        }
    }

    /// The subject: CN = the AIC (no domain suffix), or the first DNS name of a server without one.
    public static func subject(aic: AgentIdentityCode?, fallback: String?) throws -> DistinguishedName {
        guard let cn = aic?.description ?? fallback else {
            throw IdentityError(.profileViolation, "a certificate needs an AIC or a DNS name for its common name")
        }
        return try DistinguishedName { CommonName(cn) }
    }

    /// Checks a leaf against the profile for `role` and returns its AIC (nil only for a server
    /// certificate issued without one). Chain, validity and revocation are the verifier's job.
    public static func check(_ certificate: Certificate, role: CertificateRole) throws -> AgentIdentityCode? {
        let ext = certificate.extensions
        guard certificate.version == .v3 else { throw IdentityError(.profileViolation, "a CAI is an X.509 v3 certificate") }
        let eku: ExtendedKeyUsage?
        do { eku = try ext.extendedKeyUsage } catch { throw IdentityError(.profileViolation, "unreadable extendedKeyUsage") }
        guard let eku, let ekuExtension = ext[oid: .X509ExtensionID.extendedKeyUsage] else {
            throw IdentityError(.profileViolation, "no extendedKeyUsage: a CAI names exactly one of clientAuth or serverAuth")
        }
        guard eku.count == 1 else {
            throw IdentityError(.profileViolation, "extendedKeyUsage has \(eku.count) purposes; a CAI has exactly one")
        }
        guard eku.contains(role.usage) else {
            throw IdentityError(.wrongUsage, "the certificate is not for TLS \(role.rawValue) authentication (its EKU is \(eku))")
        }
        guard ekuExtension.critical else { throw IdentityError(.profileViolation, "extendedKeyUsage must be critical") }
        guard let bc = ext[oid: .X509ExtensionID.basicConstraints], bc.critical,
            case .notCertificateAuthority = try? BasicConstraints(bc)
        else { throw IdentityError(.profileViolation, "basicConstraints must be present, critical and CA:FALSE") }
        guard let ku = ext[oid: .X509ExtensionID.keyUsage], ku.critical, (try? KeyUsage(ku))?.digitalSignature == true else {
            throw IdentityError(.profileViolation, "keyUsage must be critical and allow digitalSignature")
        }
        guard (try? ext.subjectKeyIdentifier) != nil, (try? ext.authorityKeyIdentifier) != nil else {
            throw IdentityError(.profileViolation, "subject and authority key identifiers are required")
        }
        let uris = ((try? ext.subjectAlternativeNames) ?? SubjectAlternativeNames()).compactMap { name -> String? in
            if case .uniformResourceIdentifier(let uri) = name, uri.lowercased().hasPrefix(uriScheme) { return uri } else { return nil }
        }
        guard let cn = commonName(of: certificate) else {
            throw IdentityError(.profileViolation, "the subject has no common name")
        }
        let aic: AgentIdentityCode
        do {
            aic = try AgentIdentityCode(parsing: cn)
        } catch {
            if role == .server, uris.isEmpty { return nil }
            throw IdentityError(.profileViolation, "the common name '\(cn.prefix(80))' is not an AIC: \(error)")
        }
        guard uris.count == 1, uris[0].dropFirst(uriScheme.count).uppercased() == aic.description.uppercased() else {
            throw IdentityError(.profileViolation, "subjectAltName must hold exactly the URI \(uriScheme)\(aic) naming the CN's AIC")
        }
        return aic
    }

    public static func commonName(of certificate: Certificate) -> String? {
        for rdn in certificate.subject {
            for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                return String(attribute.value)
            }
        }
        return nil
    }

    /// CRLDistributionPoints with one DistributionPoint whose fullName is the URI (RFC 5280
    /// §4.2.1.13). swift-certificates has no type for it, so its DER is written here.
    static func crlDistributionPoint(_ url: String) throws -> Certificate.Extension {
        var der = DER.Serializer()
        try der.appendConstructedNode(identifier: .sequence) { points in
            try points.appendConstructedNode(identifier: .sequence) { point in
                try point.appendConstructedNode(identifier: ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)) { name in
                    try name.appendConstructedNode(identifier: ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)) { full in
                        try full.serialize(GeneralName.uniformResourceIdentifier(url))
                    }
                }
            }
        }
        return Certificate.Extension(oid: .crlDistributionPoints, critical: false, value: der.serializedBytes[...])
    }

    static func ipBytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }
}

extension Certificate.PublicKey {
    /// An ATH signing key as a certificate key: an agent's certificate carries the key that signs
    /// its handshakes, so step-3 credentials need no separate proof of possession.
    public init(_ key: ATHCore.PublicKey) {
        switch key {
        case .p256(let k): self.init(k)
        case .ed25519(let k): self.init(k)
        }
    }
}
