import Foundation
import SwiftASN1
import X509

/// An X.509 v2 certificate revocation list (RFC 5280 §5), signed by the CA that issued the
/// certificates it lists.
///
/// swift-certificates reads and writes certificates, CSRs and OCSP but has no CRL type, so the
/// list is written and read here with swift-asn1's DER coder; names, extensions and signatures
/// are swift-certificates' own types. Only what a CASP needs is modelled: the issuer, this and
/// next update, the CRL number, the authority key id, and entries with a revocation reason.
public struct CertificateRevocationList: Sendable, Hashable {
    /// RFC 5280 §5.3.1 reason codes; ACPs uses 0-5.
    public enum Reason: Int, Sendable, Hashable, CaseIterable, Codable {
        case unspecified = 0
        case keyCompromise = 1
        case caCompromise = 2
        case affiliationChanged = 3
        case superseded = 4
        case cessationOfOperation = 5

        /// The names `ath ca revoke --reason` takes, RFC 5280's spelling.
        public var name: String {
            switch self {
            case .unspecified: "unspecified"
            case .keyCompromise: "keyCompromise"
            case .caCompromise: "cACompromise"
            case .affiliationChanged: "affiliationChanged"
            case .superseded: "superseded"
            case .cessationOfOperation: "cessationOfOperation"
            }
        }

        public init?(name: String) {
            guard let match = Self.allCases.first(where: { $0.name.lowercased() == name.lowercased() }) else { return nil }
            self = match
        }
    }

    public struct Entry: Sendable, Hashable {
        public var serialNumber: Certificate.SerialNumber
        public var revocationDate: Date
        public var reason: Reason

        public init(serialNumber: Certificate.SerialNumber, revocationDate: Date, reason: Reason) {
            self.serialNumber = serialNumber
            self.revocationDate = revocationDate
            self.reason = reason
        }
    }

    public var issuer: DistinguishedName
    public var thisUpdate: Date
    public var nextUpdate: Date
    public var crlNumber: Int
    public var authorityKeyIdentifier: ArraySlice<UInt8>?
    public var entries: [Entry]
    /// The DER of the whole signed list, as read or as made by `sign`.
    public private(set) var derBytes: [UInt8]
    let tbsBytes: ArraySlice<UInt8>
    let signatureAlgorithm: Certificate.SignatureAlgorithm
    let signatureBytes: [UInt8]

    public var pemString: String { PEMDocument(type: "X509 CRL", derBytes: derBytes).pemString }

    /// Whether `serial` is on the list, and why.
    public func revocation(of serial: Certificate.SerialNumber) -> Entry? {
        entries.first { $0.serialNumber == serial }
    }

    /// Whether `issuer`'s key signed this list (and `issuer` is the CA the list names).
    public func isSigned(by issuer: Certificate) -> Bool {
        guard issuer.subject == self.issuer else { return false }
        return issuer.publicKey.isValidSignature(signatureBytes, for: tbsBytes, signatureAlgorithm: signatureAlgorithm)
    }

    // MARK: Making one

    /// Builds and signs a list. Dates are truncated to whole seconds (DER times carry no more).
    public static func sign(
        issuer: Certificate, key: Certificate.PrivateKey, entries: [Entry], crlNumber: Int, thisUpdate: Date, nextUpdate: Date
    ) throws -> CertificateRevocationList {
        let algorithm: Certificate.SignatureAlgorithm = .ecdsaWithSHA256
        var tbs = DER.Serializer()
        try tbs.appendConstructedNode(identifier: .sequence) { coder in
            try coder.serialize(1)  // v2
            try Self.serializeAlgorithm(algorithm, into: &coder)
            try coder.serialize(issuer.subject)
            try Self.serializeTime(thisUpdate, into: &coder)
            try Self.serializeTime(nextUpdate, into: &coder)
            if !entries.isEmpty {
                try coder.appendConstructedNode(identifier: .sequence) { coder in
                    for entry in entries {
                        try coder.appendConstructedNode(identifier: .sequence) { coder in
                            try coder.serialize(entry.serialNumber.bytes)
                            try Self.serializeTime(entry.revocationDate, into: &coder)
                            // RFC 5280 §5.3.1: the reason code "unspecified" SHOULD NOT be used;
                            // the extension is left out instead (and read back as unspecified).
                            if entry.reason != .unspecified {
                                try coder.appendConstructedNode(identifier: .sequence) { coder in
                                    var value = DER.Serializer()
                                    try entry.reason.rawValue.serialize(into: &value, withIdentifier: .enumerated)
                                    try coder.serialize(
                                        Certificate.Extension(oid: .reasonCode, critical: false, value: value.serializedBytes[...]))
                                }
                            }
                        }
                    }
                }
            }
            try coder.serialize(explicitlyTaggedWithTagNumber: 0, tagClass: .contextSpecific) { coder in
                try coder.appendConstructedNode(identifier: .sequence) { coder in
                    if let ski = try issuer.extensions.subjectKeyIdentifier {
                        try coder.serialize(
                            Certificate.Extension(AuthorityKeyIdentifier(keyIdentifier: ski.keyIdentifier), critical: false))
                    }
                    var number = DER.Serializer()
                    try number.serialize(crlNumber)
                    try coder.serialize(Certificate.Extension(oid: .crlNumber, critical: false, value: number.serializedBytes[...]))
                }
            }
        }
        let signature = try key.sign(bytes: tbs.serializedBytes, signatureAlgorithm: algorithm)
        var whole = DER.Serializer()
        try whole.appendConstructedNode(identifier: .sequence) { coder in
            coder.serializeRawBytes(tbs.serializedBytes)
            try Self.serializeAlgorithm(algorithm, into: &coder)
            try coder.serialize(ASN1BitString(bytes: signature.rawRepresentation[...]))
        }
        return try CertificateRevocationList(derEncoded: whole.serializedBytes)
    }

    // MARK: Reading one

    public init(pemEncoded pem: String) throws {
        let document = try PEMDocument(pemString: pem)
        guard document.discriminator == "X509 CRL" else {
            throw IdentityError(.malformedCRL, "expected a PEM 'X509 CRL', found '\(document.discriminator)'")
        }
        try self.init(derEncoded: document.derBytes)
    }

    public init(derEncoded der: [UInt8]) throws {
        do {
            let root = try DER.parse(der)
            var fields: (ArraySlice<UInt8>, Certificate.SignatureAlgorithm, [UInt8])?
            var parsed: Parsed?
            try DER.sequence(root, identifier: .sequence) { nodes in
                guard let tbsNode = nodes.next(), let algorithmNode = nodes.next(), let signatureNode = nodes.next() else {
                    throw IdentityError(.malformedCRL, "a CRL is a sequence of three elements")
                }
                parsed = try Parsed(tbsNode)
                let outer = try Self.parseAlgorithm(algorithmNode)
                guard outer == parsed?.algorithm else {
                    throw IdentityError(.malformedCRL, "the CRL's two signature algorithms differ")
                }
                let bits = try ASN1BitString(derEncoded: signatureNode)
                fields = (tbsNode.encodedBytes, outer, Array(bits.bytes))
            }
            guard let parsed, let fields else { throw IdentityError(.malformedCRL, "empty CRL") }
            issuer = parsed.issuer
            thisUpdate = parsed.thisUpdate
            nextUpdate = parsed.nextUpdate
            crlNumber = parsed.crlNumber
            authorityKeyIdentifier = parsed.aki
            entries = parsed.entries
            derBytes = der
            tbsBytes = fields.0
            signatureAlgorithm = fields.1
            signatureBytes = fields.2
        } catch let error as IdentityError {
            throw error
        } catch {
            throw IdentityError(.malformedCRL, "not a DER certificate revocation list: \(error)")
        }
    }

    private struct Parsed {
        var algorithm: Certificate.SignatureAlgorithm
        var issuer: DistinguishedName
        var thisUpdate: Date
        var nextUpdate: Date
        var crlNumber: Int
        var aki: ArraySlice<UInt8>?
        var entries: [Entry]

        init(_ node: ASN1Node) throws {
            var result: Parsed?
            try DER.sequence(node, identifier: .sequence) { nodes in
                let version = try Int(derEncoded: &nodes)
                guard version == 1 else { throw IdentityError(.malformedCRL, "only v2 CRLs are read (version \(version))") }
                guard let algorithmNode = nodes.next() else { throw IdentityError(.malformedCRL, "no signature algorithm") }
                let algorithm = try CertificateRevocationList.parseAlgorithm(algorithmNode)
                guard let issuerNode = nodes.next() else { throw IdentityError(.malformedCRL, "no issuer") }
                let issuer = try DistinguishedName(derEncoded: issuerNode)
                guard let thisNode = nodes.next() else { throw IdentityError(.malformedCRL, "no thisUpdate") }
                let thisUpdate = try CertificateRevocationList.parseTime(thisNode)
                // nextUpdate is optional in RFC 5280 but required here: a list without it never goes stale.
                guard let nextNode = nodes.next(), let nextUpdate = try? CertificateRevocationList.parseTime(nextNode)
                else { throw IdentityError(.malformedCRL, "no nextUpdate: a CRL must say when it goes stale") }
                var entries: [Entry] = []
                var extensionsNode: ASN1Node?
                while let next = nodes.next() {
                    if next.identifier == .sequence {
                        entries = try DER.sequence(next, identifier: .sequence) { list in
                            var out: [Entry] = []
                            while let entry = list.next() { out.append(try CertificateRevocationList.parseEntry(entry)) }
                            return out
                        }
                    } else if next.identifier == ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific) {
                        extensionsNode = next
                    } else {
                        throw IdentityError(.malformedCRL, "unexpected field \(next.identifier)")
                    }
                }
                var crlNumber = 0
                var aki: ArraySlice<UInt8>?
                if let extensionsNode {
                    let extensions = try DER.explicitlyTagged(extensionsNode, tagNumber: 0, tagClass: .contextSpecific) { inner in
                        try DER.sequence(of: Certificate.Extension.self, identifier: .sequence, rootNode: inner)
                    }
                    for ext in extensions {
                        switch ext.oid {
                        case .crlNumber: crlNumber = try Int(derEncoded: ext.value)
                        case .X509ExtensionID.authorityKeyIdentifier: aki = try AuthorityKeyIdentifier(ext).keyIdentifier
                        default:
                            if ext.critical {
                                throw IdentityError(.malformedCRL, "the CRL has a critical extension \(ext.oid) this reader does not know")
                            }
                        }
                    }
                }
                result = Parsed(
                    algorithm: algorithm, issuer: issuer, thisUpdate: thisUpdate, nextUpdate: nextUpdate, crlNumber: crlNumber,
                    aki: aki, entries: entries)
            }
            guard let result else { throw IdentityError(.malformedCRL, "empty tbsCertList") }
            self = result
        }

        init(
            algorithm: Certificate.SignatureAlgorithm, issuer: DistinguishedName, thisUpdate: Date, nextUpdate: Date, crlNumber: Int,
            aki: ArraySlice<UInt8>?, entries: [Entry]
        ) {
            self.algorithm = algorithm
            self.issuer = issuer
            self.thisUpdate = thisUpdate
            self.nextUpdate = nextUpdate
            self.crlNumber = crlNumber
            self.aki = aki
            self.entries = entries
        }
    }

    static func parseEntry(_ node: ASN1Node) throws -> Entry {
        try DER.sequence(node, identifier: .sequence) { nodes in
            let serial = try ArraySlice<UInt8>(derEncoded: &nodes)
            guard let dateNode = nodes.next() else { throw IdentityError(.malformedCRL, "an entry has no revocation date") }
            let date = try parseTime(dateNode)
            var reason = Reason.unspecified
            if let extensionsNode = nodes.next() {
                let extensions = try DER.sequence(of: Certificate.Extension.self, identifier: .sequence, rootNode: extensionsNode)
                for ext in extensions {
                    if ext.oid == .reasonCode {
                        let code = try Int(derEncoded: try DER.parse(ext.value), withIdentifier: .enumerated)
                        guard let known = Reason(rawValue: code) else {
                            throw IdentityError(.malformedCRL, "unknown revocation reason \(code)")
                        }
                        reason = known
                    } else if ext.critical {
                        throw IdentityError(.malformedCRL, "an entry has a critical extension \(ext.oid) this reader does not know")
                    }
                }
            }
            return Entry(serialNumber: Certificate.SerialNumber(bytes: serial), revocationDate: date, reason: reason)
        }
    }

    static func parseTime(_ node: ASN1Node) throws -> Date {
        switch node.identifier {
        case .generalizedTime: return try Date(GeneralizedTime(derEncoded: node))
        case .utcTime:
            let t = try UTCTime(derEncoded: node)
            return try Date(
                GeneralizedTime(
                    year: t.year, month: t.month, day: t.day, hours: t.hours, minutes: t.minutes, seconds: t.seconds,
                    fractionalSeconds: 0))
        default: throw IdentityError(.malformedCRL, "a time is neither UTCTime nor GeneralizedTime")
        }
    }

    /// RFC 5280 §5.1.2.4: UTCTime through 2049, GeneralizedTime from 2050.
    static func serializeTime(_ date: Date, into coder: inout DER.Serializer) throws {
        let time = try GeneralizedTime(date)
        if time.year < 2050 {
            try coder.serialize(
                UTCTime(year: time.year, month: time.month, day: time.day, hours: time.hours, minutes: time.minutes, seconds: time.seconds))
        } else {
            try coder.serialize(time)
        }
    }

    /// ECDSA algorithm identifiers carry no parameters (RFC 5758 §3.2).
    static func serializeAlgorithm(_ algorithm: Certificate.SignatureAlgorithm, into coder: inout DER.Serializer) throws {
        guard algorithm == .ecdsaWithSHA256 else {
            throw IdentityError(.malformedCRL, "CRLs are signed with ecdsa-with-SHA256 only")
        }
        try coder.appendConstructedNode(identifier: .sequence) { coder in
            try coder.serialize(ASN1ObjectIdentifier.ecdsaWithSHA256)
        }
    }

    static func parseAlgorithm(_ node: ASN1Node) throws -> Certificate.SignatureAlgorithm {
        let oid = try DER.sequence(node, identifier: .sequence) { nodes in
            let oid = try ASN1ObjectIdentifier(derEncoded: &nodes)
            _ = nodes.next()  // absent for ECDSA, NULL for RSA
            return oid
        }
        switch oid {
        case .ecdsaWithSHA256: return .ecdsaWithSHA256
        case .ecdsaWithSHA384: return .ecdsaWithSHA384
        default: throw IdentityError(.malformedCRL, "unsupported CRL signature algorithm \(oid)")
        }
    }
}

extension ASN1ObjectIdentifier {
    /// id-ce-cRLNumber (RFC 5280 §5.2.3).
    static let crlNumber: ASN1ObjectIdentifier = [2, 5, 29, 20]
    /// id-ce-cRLReasons (RFC 5280 §5.3.1).
    static let reasonCode: ASN1ObjectIdentifier = [2, 5, 29, 21]
    /// id-ce-cRLDistributionPoints (RFC 5280 §4.2.1.13).
    static let crlDistributionPoints: ASN1ObjectIdentifier = [2, 5, 29, 31]
    static let ecdsaWithSHA256: ASN1ObjectIdentifier = [1, 2, 840, 10045, 4, 3, 2]
    static let ecdsaWithSHA384: ASN1ObjectIdentifier = [1, 2, 840, 10045, 4, 3, 3]
}

extension GeneralizedTime {
    /// Whole seconds in UTC: certificates and CRLs carry no fractions.
    init(_ date: Date) throws {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        try self.init(
            year: c.year!, month: c.month!, day: c.day!, hours: c.hour!, minutes: c.minute!, seconds: c.second!, fractionalSeconds: 0)
    }
}

extension Date {
    init(_ time: GeneralizedTime) throws {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let components = DateComponents(
            year: time.year, month: time.month, day: time.day, hour: time.hours, minute: time.minutes, second: time.seconds)
        guard let date = calendar.date(from: components) else {
            throw IdentityError(.malformedCRL, "impossible date in a CRL")
        }
        self = date
    }
}
