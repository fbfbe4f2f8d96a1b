import ATHCore
import Crypto
import Foundation
import Testing
import X509

@testable import ATHIdentity

/// Fixtures: a CA, an AIC and keys, made fresh for each test.
struct PKI {
    static let salt: [UInt8] = [0x12, 0x34]
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    let ca: CertificateAuthority
    let aic: AgentIdentityCode
    let agentKey = P256.Signing.PrivateKey()

    init(name: String = "Test CASP") throws {
        ca = try CertificateAuthority.create(name: name, now: now)
        aic = try AgentIdentityCode(version: "1", arsp: "1", vendor: "34C2", ontology: "478BDF", entity: "3GF546", salt: Self.salt)
    }

    func clientCertificate(role: CertificateRole = .client, validity: TimeInterval = AgentCertificateProfile.defaultValidity) throws
        -> Certificate
    {
        try ca.issue(
            .init(aic: aic, role: role, publicKey: .init(agentKey.publicKey), validity: validity), crlURL: "http://127.0.0.1/crl.der",
            now: now)
    }

    func verifier(crls: [CertificateRevocationList]? = nil, role: CertificateRole = .client) throws -> AgentCertificateVerifier {
        let lists = try crls ?? [ca.revocationList(entries: [], number: 1, now: now)]
        return AgentCertificateVerifier(roots: [ca.root], revocation: .crls(lists), role: role)
    }
}

@Suite struct AgentCertificateTests {
    @Test func issuedCertificateFollowsTheCAIProfileAndVerifies() async throws {
        let pki = try PKI()
        let leaf = try pki.clientCertificate()
        #expect(AgentCertificateProfile.commonName(of: leaf) == pki.aic.description)
        let san = try #require(try leaf.extensions.subjectAlternativeNames)
        #expect(san.contains(.uniformResourceIdentifier("acps://\(pki.aic)")))
        #expect(try leaf.extensions.extendedKeyUsage.map(Array.init) == [.clientAuth])
        #expect(leaf.extensions[oid: .X509ExtensionID.extendedKeyUsage]?.critical == true)
        #expect(leaf.extensions[oid: .X509ExtensionID.basicConstraints]?.critical == true)
        #expect(leaf.extensions[oid: .X509ExtensionID.keyUsage]?.critical == true)
        #expect(leaf.extensions[oid: [2, 5, 29, 31]] != nil)
        #expect(leaf.notValidAfter.timeIntervalSince(pki.now) == 49 * 86_400)

        let verified = try await pki.verifier().verify([leaf] + pki.ca.issuingChain, now: pki.now)
        #expect(verified.aic == pki.aic)
        #expect(verified.chain.count == 3)
    }

    @Test func expiredAndNotYetValidCertificatesAreRefused() async throws {
        let pki = try PKI()
        let leaf = try pki.clientCertificate(validity: 3600)
        let error = await #expect(throws: IdentityError.self) {
            try await pki.verifier().verify([leaf] + pki.ca.issuingChain, now: pki.now.addingTimeInterval(3601))
        }
        #expect(error?.kind == .untrusted)
        #expect(error?.message.contains("expired") == true)
        let early = await #expect(throws: IdentityError.self) {
            try await pki.verifier().verify([leaf] + pki.ca.issuingChain, now: pki.now.addingTimeInterval(-3600))
        }
        #expect(early?.kind == .untrusted)
    }

    @Test func aCertificateFromAnotherCAIsRefused() async throws {
        let pki = try PKI()
        let other = try PKI(name: "Other CASP")
        let foreign = try other.clientCertificate()
        let error = await #expect(throws: IdentityError.self) {
            try await pki.verifier().verify([foreign] + other.ca.issuingChain, now: pki.now)
        }
        #expect(error?.kind == .untrusted)
        // Presenting our intermediate instead does not help: the signature does not chain.
        let mixed = await #expect(throws: IdentityError.self) {
            try await pki.verifier().verify([foreign] + pki.ca.issuingChain, now: pki.now)
        }
        #expect(mixed?.kind == .untrusted)
    }

    @Test func aRevokedCertificateIsRefusedAndAStaleOrForeignCRLFailsClosed() async throws {
        let pki = try PKI()
        let leaf = try pki.clientCertificate()
        let crl = try pki.ca.revocationList(
            entries: [.init(serialNumber: leaf.serialNumber, revocationDate: pki.now, reason: .keyCompromise)], number: 2, now: pki.now)
        let revoked = await #expect(throws: IdentityError.self) {
            try await pki.verifier(crls: [crl]).verify([leaf] + pki.ca.issuingChain, now: pki.now)
        }
        #expect(revoked?.kind == .revoked)
        #expect(revoked?.message.contains("keyCompromise") == true)

        let clean = try pki.ca.revocationList(entries: [], number: 1, now: pki.now, validity: 600)
        let stale = await #expect(throws: IdentityError.self) {
            try await pki.verifier(crls: [clean]).verify([leaf] + pki.ca.issuingChain, now: pki.now.addingTimeInterval(601))
        }
        #expect(stale?.kind == .revocationUnknown)

        let none = await #expect(throws: IdentityError.self) {
            try await pki.verifier(crls: []).verify([leaf] + pki.ca.issuingChain, now: pki.now)
        }
        #expect(none?.kind == .revocationUnknown)

        // A list naming our intermediate but signed by another key is not believed.
        let other = try PKI(name: "Test CASP")
        let forged = try CertificateRevocationList.sign(
            issuer: pki.ca.intermediate, key: other.ca.intermediateKey, entries: [], crlNumber: 9, thisUpdate: pki.now,
            nextUpdate: pki.now.addingTimeInterval(3600))
        let unsigned = await #expect(throws: IdentityError.self) {
            try await pki.verifier(crls: [forged]).verify([leaf] + pki.ca.issuingChain, now: pki.now)
        }
        #expect(unsigned?.kind == .revocationUnknown)

        // Explicitly disabled revocation accepts the revoked certificate: the choice is the operator's.
        let lax = AgentCertificateVerifier(roots: [pki.ca.root], revocation: .disabled)
        #expect(try await lax.verify([leaf] + pki.ca.issuingChain, now: pki.now).aic == pki.aic)
    }

    @Test func aServerCertificateIsRefusedAsAClientCertificateAndTheReverse() async throws {
        let pki = try PKI()
        let server = try pki.clientCertificate(role: .server)
        let error = await #expect(throws: IdentityError.self) {
            try await pki.verifier().verify([server] + pki.ca.issuingChain, now: pki.now)
        }
        #expect(error?.kind == .wrongUsage)
        let client = try pki.clientCertificate(role: .client)
        let reverse = await #expect(throws: IdentityError.self) {
            try await pki.verifier(role: .server).verify([client] + pki.ca.issuingChain, now: pki.now)
        }
        #expect(reverse?.kind == .wrongUsage)
    }

    @Test func certificatesOutsideTheProfileAreRefused() async throws {
        let pki = try PKI()
        let key = Certificate.PublicKey(pki.agentKey.publicKey)
        // CN that is not an AIC, SAN URI naming another AIC, non-critical EKU: each refused.
        func make(cn: String, uri: String, ekuCritical: Bool) throws -> Certificate {
            try Certificate(
                version: .v3, serialNumber: .init(), publicKey: key, notValidBefore: pki.now.addingTimeInterval(-60),
                notValidAfter: pki.now.addingTimeInterval(3600), issuer: pki.ca.intermediate.subject,
                subject: try DistinguishedName { CommonName(cn) }, signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
                    if ekuCritical { Critical(try ExtendedKeyUsage([.clientAuth])) } else { try ExtendedKeyUsage([.clientAuth]) }
                    SubjectKeyIdentifier(hash: key)
                    AuthorityKeyIdentifier(keyIdentifier: try pki.ca.intermediate.extensions.subjectKeyIdentifier!.keyIdentifier)
                    SubjectAlternativeNames([.uniformResourceIdentifier(uri)])
                }, issuerPrivateKey: pki.ca.intermediateKey)
        }
        let other = try AgentIdentityCode(version: "1", arsp: "1", vendor: "34C2", ontology: "478BDF", entity: "3GF547", salt: PKI.salt)
        for (cn, uri, critical, fragment) in [
            ("agent.example", "acps://\(pki.aic)", true, "not an AIC"),
            (pki.aic.description, "acps://\(other)", true, "subjectAltName"),
            (pki.aic.description, "acps://\(pki.aic)", false, "critical"),
        ] {
            let error = await #expect(throws: IdentityError.self) {
                try await pki.verifier().verify([try make(cn: cn, uri: uri, ekuCritical: critical)] + pki.ca.issuingChain, now: pki.now)
            }
            #expect(error?.kind == .profileViolation)
            #expect(error?.message.contains(fragment) == true, "\(String(describing: error))")
        }
    }

    @Test func aCSRIsIssuedWithItsKeyAndACSRForAnotherAICIsRefused() async throws {
        let pki = try PKI()
        let key = Certificate.PrivateKey(pki.agentKey)
        let csr = try CertificateSigningRequest(
            version: .v1, subject: try DistinguishedName { CommonName(pki.aic.description) }, privateKey: key,
            attributes: CertificateSigningRequest.Attributes(), signatureAlgorithm: .ecdsaWithSHA256)
        let request = try CertificateAuthority.Request(csr: csr, aic: nil, role: .client)
        #expect(request.aic == pki.aic)
        let leaf = try pki.ca.issue(request, crlURL: nil, now: pki.now)
        #expect(leaf.publicKey == key.publicKey)
        #expect(try await pki.verifier().verify([leaf] + pki.ca.issuingChain, now: pki.now).aic == pki.aic)

        let other = try AgentIdentityCode(version: "1", arsp: "1", vendor: "34C2", ontology: "478BDF", entity: "3GF548", salt: PKI.salt)
        let mismatch = #expect(throws: IdentityError.self) { try CertificateAuthority.Request(csr: csr, aic: other, role: .client) }
        #expect(mismatch?.kind == .identityMismatch)
    }
}

@Suite struct CertificateRevocationListTests {
    @Test func aSignedListReadsBackWithItsEntriesAndATamperedOneDoesNotVerify() throws {
        let pki = try PKI()
        let entries: [CertificateRevocationList.Entry] = [
            .init(serialNumber: .init(bytes: [0x01, 0x02]), revocationDate: pki.now, reason: .superseded),
            .init(serialNumber: .init(bytes: [0x7F, 0xAA, 0x03]), revocationDate: pki.now.addingTimeInterval(5), reason: .unspecified),
        ]
        let crl = try pki.ca.revocationList(entries: entries, number: 42, now: pki.now)
        let read = try CertificateRevocationList(pemEncoded: crl.pemString)
        #expect(read.entries == entries)
        #expect(read.crlNumber == 42)
        #expect(read.issuer == pki.ca.intermediate.subject)
        #expect(read.nextUpdate == pki.now.addingTimeInterval(7 * 86_400))
        #expect(read.authorityKeyIdentifier == (try pki.ca.intermediate.extensions.subjectKeyIdentifier?.keyIdentifier))
        #expect(read.isSigned(by: pki.ca.intermediate))
        #expect(!read.isSigned(by: pki.ca.root))

        // Flip one byte of the second serial inside the DER: still parses, no longer verifies.
        var der = crl.derBytes
        let serial: [UInt8] = [0x7F, 0xAA, 0x03]
        let at = try #require(
            (0..<(der.count - 3)).first { der[$0..<($0 + 3)].elementsEqual(serial) })
        der[at + 1] ^= 0x01
        let tampered = try CertificateRevocationList(derEncoded: der)
        #expect(!tampered.isSigned(by: pki.ca.intermediate))
    }

    @Test func garbageIsAClearError() {
        let error = #expect(throws: IdentityError.self) { try CertificateRevocationList(derEncoded: [0x30, 0x03, 0x02, 0x01, 0x01]) }
        #expect(error?.kind == .malformedCRL)
        let pem = #expect(throws: IdentityError.self) {
            try CertificateRevocationList(pemEncoded: "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n")
        }
        #expect(pem?.kind == .malformedCRL)
    }
}
