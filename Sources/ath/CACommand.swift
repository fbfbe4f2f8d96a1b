import ATHCore
import ATHIdentity
import ArgumentParser
import Crypto
import Foundation
import X509

/// `ath ca`: a certificate authority for agents' certificates (ACPs CASP) kept in a folder
/// (`CertificateAuthorityFolder` says what is in it).
struct CACommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ca", abstract: "A certificate authority for agent certificates (CAI): init, issue, revoke, crl, list.",
        subcommands: [Init.self, Issue.self, Revoke.self, CRL.self, List.self])

    struct Folder: ParsableArguments {
        @Option(help: "The CA's folder.") var dir: String = "ath-ca"
        var folder: CertificateAuthorityFolder { CertificateAuthorityFolder(URL(fileURLWithPath: dir)) }
    }

    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a root and an intermediate CA (P-256) and an empty CRL.")
        @OptionGroup var folder: Folder
        @Option(help: "The CA's name (organization and common names).") var name: String = "ATH Agent CA"
        @Option(help: "Where the CRL will be published (written into each certificate's CRL distribution point).") var crlURL: String?
        @Option(help: "Days each CRL stays valid: publish again (`ath ca crl`) before then.") var crlDays: Int = 7

        func run() async throws {
            guard (1...365).contains(crlDays) else { throw ValidationError("--crl-days must be 1-365") }
            let dir = URL(fileURLWithPath: folder.dir)
            try CertificateAuthorityFolder.initialize(
                at: dir, name: name, crlURL: crlURL, crlValidity: TimeInterval(crlDays * 86_400), now: Date())
            print(
                "CA created in \(dir.path): trust chain.pem (or root.pem); keys are *-key.pem (0600); CRLs in crl.pem (the intermediate's) and root-crl.pem (the root's)")
        }
    }

    struct Issue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue a certificate with the CAI profile for a CSR, an existing public key, or a new key.")
        @OptionGroup var folder: Folder
        @Option(help: "client (an agent calling) or server.") var role: String = "client"
        @Option(help: "The agent's AIC (required for client certificates unless the CSR names it).") var aic: String?
        @Option(help: "The ARSP's salt in hex: check the AIC's checksum before issuing.") var salt: String?
        @Option(help: "A PEM CSR to certify (its signature must verify).") var csr: String?
        @Option(help: "A PEM public key to certify, e.g. the agent's ATH key from `ath keygen` (so step 3 can carry it).")
        var publicKey: String?
        @Option(help: "Generate a new P-256 key and write it here (PKCS#8, 0600).") var keyOut: String?
        @Option(help: "A DNS name for the subjectAltName (repeatable).") var dns: [String] = []
        @Option(help: "An IP address for the subjectAltName (repeatable).") var ip: [String] = []
        @Option(help: "Validity in days.") var days: Int = 49
        @Option(name: .shortAndLong, help: "Where to write the certificate followed by the intermediate (PEM).") var out: String

        func run() async throws {
            guard let role = CertificateRole(rawValue: role) else { throw ValidationError("--role is client or server") }
            guard [csr != nil, publicKey != nil, keyOut != nil].filter({ $0 }).count == 1 else {
                throw ValidationError("give exactly one of --csr, --public-key, --key-out")
            }
            guard (1...825).contains(days) else { throw ValidationError("--days must be 1-825") }
            let code = try aic.map { try AgentIdentityCode(parsing: $0) }
            if let code, let salt {
                guard let bytes = Self.hex(salt), bytes.count >= 2 else { throw ValidationError("--salt is at least two bytes of hex") }
                try code.verifyChecksum(salt: bytes)
            }
            var request: CertificateAuthority.Request
            if let csr {
                request = try CertificateAuthority.Request(
                    csr: try CertificateSigningRequest(pemEncoded: readText(csr, "the CSR")), aic: code, role: role)
            } else if let publicKey {
                let key = try PublicKey(pem: readText(publicKey, "the public key"))
                request = .init(aic: code, role: role, publicKey: Certificate.PublicKey(key))
            } else {
                let key = P256.Signing.PrivateKey()
                request = .init(aic: code, role: role, publicKey: .init(key.publicKey))
                try Self.writeNew(key.pemRepresentation, to: keyOut!, mode: 0o600)
            }
            request.dnsNames = dns
            request.ipAddresses = ip
            request.validity = TimeInterval(days * 86_400)
            let ca = folder.folder
            let certificate = try ca.issue(request, now: Date())
            let pem = try certificate.serializeAsPEM().pemString + "\n" + (try ca.load().intermediate.serializeAsPEM().pemString) + "\n"
            try Self.writeNew(pem, to: out, mode: 0o644)
            print(
                "issued \(CertificateAuthorityFolder.hex(certificate.serialNumber)) for "
                    + "\(AgentCertificateProfile.commonName(of: certificate) ?? "?") (\(role.rawValue)) until \(certificate.notValidAfter) -> \(out)")
        }

        static func hex(_ text: String) -> [UInt8]? {
            let chars = Array(text)
            guard chars.count % 2 == 0 else { return nil }
            var bytes: [UInt8] = []
            for i in stride(from: 0, to: chars.count, by: 2) {
                guard let byte = UInt8(String(chars[i...i + 1]), radix: 16) else { return nil }
                bytes.append(byte)
            }
            return bytes
        }

        /// Refuses to overwrite: a key or certificate written over by mistake is lost.
        static func writeNew(_ text: String, to path: String, mode: Int) throws {
            guard !FileManager.default.fileExists(atPath: path) else { throw ValidationError("\(path) exists; not overwriting it") }
            guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: mode]) else {
                throw ValidationError("cannot write \(path)")
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a certificate and publish the new CRL; the intermediate's serial (or --cert intermediate.pem) revokes the intermediate in the root's CRL.")
        @OptionGroup var folder: Folder
        @Option(help: "The certificate's serial (as `ath ca list` prints it).") var serial: String?
        @Option(help: "Or the certificate file (PEM; its first certificate).") var cert: String?
        @Option(help: "unspecified, keyCompromise, cACompromise, affiliationChanged, superseded or cessationOfOperation.")
        var reason: String = "unspecified"

        func run() async throws {
            guard let why = CertificateRevocationList.Reason(name: reason) else { throw ValidationError("unknown --reason \(reason)") }
            let target: String
            switch (serial, cert) {
            case (let s?, nil): target = s
            case (nil, let file?):
                let first = try Certificate.bundle(file: file)[0]
                target = CertificateAuthorityFolder.hex(first.serialNumber)
            default: throw ValidationError("give --serial or --cert")
            }
            let crl = try folder.folder.revoke(serial: target, reason: why, now: Date())
            let file = crl.issuer == (try folder.folder.load().root.subject) ? "root-crl.pem" : "crl.pem"
            print("revoked \(target) (\(why.name)); CRL \(crl.crlNumber) published in \(folder.dir)/\(file), valid until \(crl.nextUpdate)")
        }
    }

    struct CRL: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Publish a fresh CRL (run before the current one's next update).")
        @OptionGroup var folder: Folder

        func run() async throws {
            let crl = try folder.folder.publishCRL(now: Date())
            print("CRL \(crl.crlNumber) with \(crl.entries.count) revoked, valid until \(crl.nextUpdate)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List issued certificates.")
        @OptionGroup var folder: Folder
        @Flag(help: "JSON output.") var json = false

        func run() async throws {
            let issued = try folder.folder.issued()
            if !json { print("\(CertificateAuthorityFolder.hex(try folder.folder.load().intermediate.serialNumber))  intermediate") }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                print(String(decoding: try encoder.encode(issued), as: UTF8.self))
                return
            }
            for i in issued {
                let state = i.revokedAt.map { "revoked at \($0) (\(i.reason?.name ?? "unspecified"))" } ?? "valid until \(i.notAfter)"
                print("\(i.serial)  \(i.role.rawValue)  \(i.subject)  \(state)")
            }
        }
    }
}

/// A file's text, or an error naming what could not be read.
func readText(_ path: String, _ what: String) throws -> String {
    do { return try String(contentsOfFile: path, encoding: .utf8) } catch { throw ValidationError("cannot read \(what) from \(path)") }
}
