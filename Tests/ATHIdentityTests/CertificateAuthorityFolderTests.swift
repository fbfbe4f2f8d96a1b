import ATHCore
import Crypto
import Foundation
import Testing
import X509

@testable import ATHIdentity
import ATHTestSupport

@Suite struct CertificateAuthorityFolderTests {
    func temporaryFolder() -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("ath-ca-\(UUID().uuidString)")
    }

    @Test func initIssueRevokeAndPublishKeepAConsistentFolder() async throws {
        let pki = try PKI()
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let folder = try CertificateAuthorityFolder.initialize(at: dir, name: "Folder CASP", crlURL: "http://127.0.0.1/crl.der", now: pki.now)
        for key in ["root-key.pem", "intermediate-key.pem"] {
            let mode = try FileManager.default.attributesOfItem(atPath: dir.appendingPathComponent(key).path)[.posixPermissions] as? Int
            #expect(mode == 0o600, "\(key)")
        }
        let again = #expect(throws: IdentityError.self) {
            try CertificateAuthorityFolder.initialize(at: dir, name: "x", crlURL: nil, now: pki.now)
        }
        #expect(again?.kind == .authority)
        #expect(try folder.currentCRL().crlNumber == 1)

        let leaf = try folder.issue(.init(aic: pki.aic, role: .client, publicKey: .init(pki.agentKey.publicKey)), now: pki.now)
        #expect(try folder.issued().map(\.subject) == [pki.aic.description])
        let ca = try folder.load()
        let chain = [leaf] + ca.issuingChain
        let verifier = { AgentCertificateVerifier(roots: [ca.root], revocation: .crls([try folder.currentCRL()])) }
        #expect(try await verifier().verify(chain, now: pki.now).aic == pki.aic)

        let crl = try folder.revoke(serial: leaf.serialNumber.description, reason: .keyCompromise, now: pki.now)
        #expect(crl.crlNumber == 2)
        #expect(try folder.currentCRL() == crl)
        let revoked = await #expect(throws: IdentityError.self) { try await verifier().verify(chain, now: pki.now) }
        #expect(revoked?.kind == .revoked)

        let twice = #expect(throws: IdentityError.self) {
            try folder.revoke(serial: leaf.serialNumber.description, reason: .superseded, now: pki.now)
        }
        #expect(twice?.message.contains("already revoked") == true)
        let unknown = #expect(throws: IdentityError.self) { try folder.revoke(serial: "01:02", reason: .unspecified, now: pki.now) }
        #expect(unknown?.message.contains("no certificate") == true)
        #expect(try folder.currentCRL().crlNumber == 2, "a refused revocation publishes nothing")

        let republished = try folder.publishCRL(now: pki.now.addingTimeInterval(86_400))
        #expect(republished.crlNumber == 3)
        #expect(republished.revocation(of: leaf.serialNumber)?.reason == .keyCompromise)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".tmp") }
        #expect(leftovers.isEmpty)
    }

    @Test func aMissingFolderIsAClearError() throws {
        let folder = CertificateAuthorityFolder(temporaryFolder())
        let error = #expect(throws: IdentityError.self) { try folder.load() }
        #expect(error?.kind == .authority)
        #expect(error?.message.contains("ath ca init") == true)
    }

    /// OpenSSL, an implementation we did not write, accepts our chain and CRL and sees the revocation.
    @Test func openSSLVerifiesTheChainAndHonoursTheCRL() throws {
        let now = Date()
        let (dir, folder, leaf, leafFile) = try folderWithLeaf("Interop CASP", now: now)
        defer { try? FileManager.default.removeItem(at: dir) }
        func verify() throws -> (Int32, String) {
            try run(
                "/usr/bin/openssl",
                [
                    "verify", "-crl_check", "-purpose", "sslclient", "-CAfile", dir.appendingPathComponent("root.pem").path, "-untrusted",
                    dir.appendingPathComponent("intermediate.pem").path, "-CRLfile", dir.appendingPathComponent("crl.pem").path,
                    leafFile.path,
                ])
        }
        let good = try verify()
        #expect(good.0 == 0, "\(good.1)")
        _ = try folder.revoke(serial: leaf.serialNumber.description, reason: .keyCompromise, now: now)
        let bad = try verify()
        #expect(bad.0 != 0)
        #expect(bad.1.contains("revoked"), "\(bad.1)")
        let text = try run("/usr/bin/openssl", ["crl", "-in", dir.appendingPathComponent("crl.pem").path, "-noout", "-text"])
        #expect(text.1.contains("Key Compromise"), "\(text.1)")
        #expect(text.1.contains("X509v3 CRL Number"), "\(text.1)")
    }

    /// RFC 5280: serial numbers of at most 20 octets (§4.1.2.2), and no `unspecified` reason
    /// code in a CRL (§5.3.1: leave the extension out), both read back by OpenSSL.
    @Test func serialsAndReasonCodesFollowRFC5280() throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let now = Date()
        let folder = try CertificateAuthorityFolder.initialize(at: dir, name: "Serial CASP", crlURL: nil, now: now)
        let pki = try PKI()
        var leaves: [Certificate] = []
        // With one random byte first, half of all serials needed a 21st octet: 64 draws make
        // passing by luck a 1-in-2^64 event.
        for _ in 0..<64 {
            leaves.append(try folder.issue(.init(aic: pki.aic, role: .client, publicKey: .init(pki.agentKey.publicKey)), now: now))
        }
        let ca = try folder.load()
        for certificate in leaves + [ca.root, ca.intermediate] {
            let bytes = Array(certificate.serialNumber.bytes)
            #expect(bytes.count == 20 && bytes[0] & 0x80 == 0 && bytes[0] != 0, "\(certificate.serialNumber)")
        }
        let leafFile = dir.appendingPathComponent("leaf.pem")
        try leaves[0].serializeAsPEM().pemString.write(to: leafFile, atomically: true, encoding: .utf8)
        let printed = try run("/usr/bin/openssl", ["x509", "-in", leafFile.path, "-noout", "-serial"])
        let hex = printed.1.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "=").last ?? ""
        #expect(printed.0 == 0 && hex.count == 40, "\(printed.1)")

        _ = try folder.revoke(serial: leaves[0].serialNumber.description, reason: .unspecified, now: now)
        _ = try folder.revoke(serial: leaves[1].serialNumber.description, reason: .keyCompromise, now: now)
        let text = try run("/usr/bin/openssl", ["crl", "-in", dir.appendingPathComponent("crl.pem").path, "-noout", "-text"])
        #expect(text.0 == 0 && !text.1.contains("Unspecified") && text.1.contains("Key Compromise"), "\(text.1)")
        #expect(text.1.components(separatedBy: "CRL Reason Code").count == 2, "\(text.1)")
        // Read back, the entry without the extension is unspecified.
        let crl = try folder.currentCRL()
        #expect(crl.revocation(of: leaves[0].serialNumber)?.reason == .unspecified)
        #expect(crl.revocation(of: leaves[1].serialNumber)?.reason == .keyCompromise)
    }

    /// The root publishes a CRL too, so that the intermediate can be revoked: OpenSSL checking
    /// every level (`-crl_check_all`) accepts the chain before and refuses it after, and so does
    /// `AgentTrust` with both lists.
    @Test func theIntermediateCanBeRevokedInTheRootsCRL() async throws {
        let now = Date()
        let (dir, folder, leaf, leafFile) = try folderWithLeaf("Root CRL CASP", now: now)
        defer { try? FileManager.default.removeItem(at: dir) }
        let crls = try String(contentsOf: dir.appendingPathComponent("crl.pem"), encoding: .utf8)
            + (try String(contentsOf: dir.appendingPathComponent("root-crl.pem"), encoding: .utf8))
        func verify() throws -> (Int32, String) {
            let both = dir.appendingPathComponent("crls.pem")
            try (try String(contentsOf: dir.appendingPathComponent("crl.pem"), encoding: .utf8)
                + (try String(contentsOf: dir.appendingPathComponent("root-crl.pem"), encoding: .utf8))).write(to: both, atomically: true, encoding: .utf8)
            return try run(
                "/usr/bin/openssl",
                [
                    "verify", "-crl_check_all", "-purpose", "sslclient", "-CAfile", dir.appendingPathComponent("root.pem").path,
                    "-untrusted", dir.appendingPathComponent("intermediate.pem").path, "-CRLfile", both.path, leafFile.path,
                ])
        }
        #expect(!crls.isEmpty)
        let good = try verify()
        #expect(good.0 == 0, "\(good.1)")
        let trust = AgentTrust(
            roots: [try folder.load().root], revocation: .files([dir.appendingPathComponent("crl.pem"), dir.appendingPathComponent("root-crl.pem")]))
        _ = try await trust.verify([leaf, try folder.load().intermediate], role: .client, now: now)

        let intermediate = try folder.load().intermediate
        let rootCRL = try folder.revoke(serial: intermediate.serialNumber.hex, reason: .caCompromise, now: now)
        #expect(rootCRL.issuer == (try folder.load().root.subject))
        #expect(rootCRL.revocation(of: intermediate.serialNumber)?.reason == .caCompromise)
        #expect(try folder.currentCRL().entries.isEmpty)
        let bad = try verify()
        #expect(bad.0 != 0 && bad.1.contains("revoked"), "\(bad.1)")
        await #expect { try await trust.verify([leaf, intermediate], role: .client, now: now) } throws: {
            ($0 as? IdentityError)?.kind == .revoked
        }
        #expect(throws: IdentityError.self) { try folder.revoke(serial: intermediate.serialNumber.hex, reason: .caCompromise, now: now) }
    }

    /// A new CA folder and one client leaf it issued, written to `leaf.pem` beside it.
    func folderWithLeaf(_ name: String, now: Date) throws -> (URL, CertificateAuthorityFolder, Certificate, URL) {
        let dir = temporaryFolder()
        let folder = try CertificateAuthorityFolder.initialize(at: dir, name: name, crlURL: nil, now: now)
        let pki = try PKI()
        let leaf = try folder.issue(.init(aic: pki.aic, role: .client, publicKey: .init(pki.agentKey.publicKey)), now: now)
        let leafFile = dir.appendingPathComponent("leaf.pem")
        try leaf.serializeAsPEM().pemString.write(to: leafFile, atomically: true, encoding: .utf8)
        return (dir, folder, leaf, leafFile)
    }

    func run(_ tool: String, _ arguments: [String]) throws -> (Int32, String) {
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
