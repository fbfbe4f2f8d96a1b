import ATHCore
import Crypto
import Foundation
import SwiftASN1
import X509

#if canImport(Glibc)
    import Glibc
#endif

/// The CA of `ath ca` on disk. One folder:
///
///     root.pem, intermediate.pem     the CA certificates (public)
///     chain.pem                      intermediate then root, what a verifier or a client trusts
///     root-key.pem, intermediate-key.pem   PKCS#8 keys, mode 0600
///     state.json                     CRL URL and number, and every certificate issued and revoked
///     crl.pem, crl.der               the intermediate's current CRL (published)
///     root-crl.pem, root-crl.der     the root's current CRL: the intermediate, once revoked
///
/// Every change takes an exclusive lock, writes whole files next to their target and renames
/// them over it, so a crash or a refused request leaves the previous state intact. The CRL is
/// written before the state that lists the revocation and renamed after it: at every instant
/// the published CRL is one the state can reproduce.
public struct CertificateAuthorityFolder: Sendable {
    public let directory: URL

    public init(_ directory: URL) {
        self.directory = directory
    }

    /// One issued certificate as the CA remembers it.
    public struct Issued: Codable, Sendable, Equatable {
        public var serial: String
        public var subject: String
        public var role: CertificateRole
        public var notAfter: Int64
        public var revokedAt: Int64?
        public var reason: CertificateRevocationList.Reason?

        enum CodingKeys: String, CodingKey {
            case serial, subject, role
            case notAfter = "not_after"
            case revokedAt = "revoked_at"
            case reason
        }
    }

    struct State: Codable {
        var crlURL: String?
        var crlNumber: Int
        var crlValidity: Int
        var issued: [Issued]
        /// The root's CRL number (absent in folders made before the root published one).
        var rootCRLNumber: Int?
        /// When the intermediate was revoked, and why.
        var intermediateRevokedAt: Int64?
        var intermediateReason: CertificateRevocationList.Reason?

        enum CodingKeys: String, CodingKey {
            case crlURL = "crl_url"
            case crlNumber = "crl_number"
            case crlValidity = "crl_validity_seconds"
            case issued
            case rootCRLNumber = "root_crl_number"
            case intermediateRevokedAt = "intermediate_revoked_at"
            case intermediateReason = "intermediate_reason"
        }
    }

    func file(_ name: String) -> URL { directory.appendingPathComponent(name) }

    // MARK: Creating

    /// Creates the root, the intermediate and an empty CRL. Refuses a folder that already holds a CA.
    @discardableResult
    public static func initialize(at directory: URL, name: String, crlURL: String?, crlValidity: TimeInterval = 7 * 86_400, now: Date)
        throws -> CertificateAuthorityFolder
    {
        let folder = CertificateAuthorityFolder(directory)
        let fm = FileManager.default
        if fm.fileExists(atPath: folder.file("state.json").path) || fm.fileExists(atPath: folder.file("root.pem").path) {
            throw IdentityError(.authority, "\(directory.path) already holds a CA; refusing to overwrite it")
        }
        try fm.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let ca = try CertificateAuthority.create(name: name, now: now)
        try folder.write(try ca.rootKey.serializeAsPEM().pemString, to: "root-key.pem", mode: 0o600)
        try folder.write(try ca.intermediateKey.serializeAsPEM().pemString, to: "intermediate-key.pem", mode: 0o600)
        try folder.write(try ca.root.serializeAsPEM().pemString, to: "root.pem")
        try folder.write(try ca.intermediate.serializeAsPEM().pemString, to: "intermediate.pem")
        try folder.write(
            try ca.intermediate.serializeAsPEM().pemString + "\n" + (try ca.root.serializeAsPEM().pemString) + "\n", to: "chain.pem")
        let state = State(crlURL: crlURL, crlNumber: 0, crlValidity: Int(crlValidity), issued: [])
        try folder.commit(state, ca: ca, now: now)
        return folder
    }

    // MARK: Reading

    public func load() throws -> CertificateAuthority {
        do {
            return try CertificateAuthority(
                root: try Certificate(pemEncoded: read("root.pem")), rootKey: try Certificate.PrivateKey(pemEncoded: read("root-key.pem")),
                intermediate: try Certificate(pemEncoded: read("intermediate.pem")),
                intermediateKey: try Certificate.PrivateKey(pemEncoded: read("intermediate-key.pem")))
        } catch let error as IdentityError {
            throw error
        } catch {
            throw IdentityError(.authority, "\(directory.path) does not hold a readable CA (run `ath ca init`): \(error)")
        }
    }

    public func issued() throws -> [Issued] { try loadState().issued }

    public func currentCRL() throws -> CertificateRevocationList { try CertificateRevocationList(pemEncoded: read("crl.pem")) }

    /// The root's current CRL.
    public func currentRootCRL() throws -> CertificateRevocationList { try CertificateRevocationList(pemEncoded: read("root-crl.pem")) }

    // MARK: Changing

    /// Issues and records a certificate; returns it.
    public func issue(_ request: CertificateAuthority.Request, now: Date) throws -> Certificate {
        try locked {
            let ca = try load()
            var state = try loadState()
            let certificate = try ca.issue(request, crlURL: state.crlURL, now: now)
            state.issued.append(
                Issued(
                    serial: Self.hex(certificate.serialNumber), subject: AgentCertificateProfile.commonName(of: certificate) ?? "",
                    role: request.role, notAfter: Int64(certificate.notValidAfter.timeIntervalSince1970)))
            try commit(state, ca: nil, now: now)
            return certificate
        }
    }

    /// Revokes a certificate this CA issued (by serial, as `ath ca list` prints it) and publishes
    /// the new CRL; the intermediate's own serial revokes the intermediate, in the root's CRL
    /// (every certificate it signed then fails where the root's CRL is checked). Revoking twice is
    /// refused so the first date and reason stay. Returns the list that carries the revocation.
    public func revoke(serial: String, reason: CertificateRevocationList.Reason, now: Date) throws -> CertificateRevocationList {
        try locked {
            let ca = try load()
            var state = try loadState()
            let wanted = try Self.serial(serial)
            // The intermediate itself: the root's CRL lists it, and everything it signed falls with it.
            if wanted == ca.intermediate.serialNumber {
                guard state.intermediateRevokedAt == nil else { throw IdentityError(.authority, "the intermediate is already revoked") }
                state.intermediateRevokedAt = Int64(now.timeIntervalSince1970)
                state.intermediateReason = reason
                let published = try commit(state, ca: ca, now: now)
                return published.root ?? published.intermediate
            }
            guard let index = state.issued.firstIndex(where: { (try? Self.serial($0.serial)) == wanted })
            else { throw IdentityError(.authority, "this CA issued no certificate with serial \(serial)") }
            guard state.issued[index].revokedAt == nil else {
                throw IdentityError(.authority, "certificate \(serial) is already revoked")
            }
            state.issued[index].revokedAt = Int64(now.timeIntervalSince1970)
            state.issued[index].reason = reason
            return try commit(state, ca: ca, now: now).intermediate
        }
    }

    /// Publishes a fresh CRL (a new number, the same entries): run before the current one's
    /// nextUpdate, from cron or a timer.
    public func publishCRL(now: Date) throws -> CertificateRevocationList {
        try locked { try commit(try loadState(), ca: try load(), now: now).intermediate }
    }

    // MARK: Files

    /// Writes the state, and when `ca` is given a new CRL numbered one higher, in the order the
    /// type's comment describes.
    @discardableResult
    private func commit(_ state: State, ca: CertificateAuthority?, now: Date) throws -> (intermediate: CertificateRevocationList, root: CertificateRevocationList?) {
        var state = state
        guard let ca else {
            try write(String(decoding: try Self.encoder.encode(state), as: UTF8.self), to: "state.json")
            return (try currentCRL(), nil)
        }
        state.crlNumber += 1
        let entries = try state.issued.compactMap { issued -> CertificateRevocationList.Entry? in
            guard let at = issued.revokedAt else { return nil }
            return .init(
                serialNumber: try Self.serial(issued.serial), revocationDate: Date(timeIntervalSince1970: TimeInterval(at)),
                reason: issued.reason ?? .unspecified)
        }
        let crl = try ca.revocationList(entries: entries, number: state.crlNumber, now: now, validity: TimeInterval(state.crlValidity))
        state.rootCRLNumber = (state.rootCRLNumber ?? 0) + 1
        let intermediateEntries = state.intermediateRevokedAt.map {
            [
                CertificateRevocationList.Entry(
                    serialNumber: ca.intermediate.serialNumber, revocationDate: Date(timeIntervalSince1970: TimeInterval($0)),
                    reason: state.intermediateReason ?? .unspecified)
            ]
        } ?? []
        let rootCRL = try ca.rootRevocationList(
            entries: intermediateEntries, number: state.rootCRLNumber!, now: now, validity: TimeInterval(state.crlValidity))
        let staged = [
            // PEM files end with a newline, so that they can be concatenated into one bundle.
            (try stage(crl.pemString + "\n", name: "crl.pem"), "crl.pem"), (try stage(Data(crl.derBytes), name: "crl.der"), "crl.der"),
            (try stage(rootCRL.pemString + "\n", name: "root-crl.pem"), "root-crl.pem"),
            (try stage(Data(rootCRL.derBytes), name: "root-crl.der"), "root-crl.der"),
        ]
        try write(String(decoding: try Self.encoder.encode(state), as: UTF8.self), to: "state.json")
        for (temp, name) in staged { try place(temp, as: name) }
        return (crl, rootCRL)
    }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        return e
    }()

    /// Serials as OpenSSL prints them: two hex digits a byte, colon-separated.
    public static func hex(_ serial: Certificate.SerialNumber) -> String { serial.hex }

    /// Reads a serial with or without colons (and swift-certificates' unpadded form).
    static func serial(_ text: String) throws -> Certificate.SerialNumber {
        let groups: [Substring]
        if text.contains(":") {
            groups = text.split(separator: ":", omittingEmptySubsequences: false)
        } else {
            guard text.count % 2 == 0 else { throw IdentityError(.authority, "bad serial \(text)") }
            var pairs: [Substring] = []
            var index = text.startIndex
            while index < text.endIndex {
                let next = text.index(index, offsetBy: 2)
                pairs.append(text[index..<next])
                index = next
            }
            groups = pairs
        }
        let bytes = try groups.map { group -> UInt8 in
            guard (1...2).contains(group.count), let byte = UInt8(group, radix: 16) else {
                throw IdentityError(.authority, "bad serial \(text)")
            }
            return byte
        }
        guard !bytes.isEmpty else { throw IdentityError(.authority, "bad serial \(text)") }
        return Certificate.SerialNumber(bytes: bytes)
    }

    private func loadState() throws -> State {
        do {
            return try JSONDecoder().decode(State.self, from: Data(contentsOf: file("state.json")))
        } catch {
            throw IdentityError(.authority, "\(directory.path)/state.json is missing or unreadable (run `ath ca init`)")
        }
    }

    private func read(_ name: String) throws -> String {
        do { return try String(contentsOf: file(name), encoding: .utf8) } catch {
            throw IdentityError(.authority, "cannot read \(file(name).path) (run `ath ca init`)")
        }
    }

    private func write(_ text: String, to name: String, mode: Int = 0o644) throws {
        try place(try stage(Data(text.utf8), name: name, mode: mode), as: name)
    }

    private func stage(_ text: String, name: String) throws -> URL { try stage(Data(text.utf8), name: name) }

    private func stage(_ data: Data, name: String, mode: Int = 0o644) throws -> URL {
        let temp = file(".\(name).\(UUID().uuidString).tmp")
        guard FileManager.default.createFile(atPath: temp.path, contents: data, attributes: [.posixPermissions: mode]) else {
            throw IdentityError(.authority, "cannot write \(temp.path)")
        }
        return temp
    }

    private func place(_ temp: URL, as name: String) throws {
        guard rename(temp.path, file(name).path) == 0 else {
            try? FileManager.default.removeItem(at: temp)
            throw IdentityError(.authority, "cannot replace \(file(name).path)")
        }
    }

    /// One change at a time, across processes.
    private func locked<T>(_ body: () throws -> T) throws -> T {
        let fd = open(file(".lock").path, O_CREAT | O_RDWR, 0o600)
        guard fd >= 0 else { throw IdentityError(.authority, "cannot lock \(directory.path) (does it exist?)") }
        defer { close(fd) }
        guard flock(fd, LOCK_EX) == 0 else { throw IdentityError(.authority, "cannot lock \(directory.path)") }
        defer { flock(fd, LOCK_UN) }
        return try body()
    }
}

extension Certificate {
    /// Every certificate of a PEM bundle file, in order; an unreadable file or a bad block is
    /// an error naming the file.
    public static func bundle(file path: String) throws -> [Certificate] {
        guard let pem = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw IdentityError(.malformedCertificate, "cannot read certificates from \(path)")
        }
        do { return try bundle(pem: pem) } catch let error as IdentityError {
            throw IdentityError(error.kind, "\(path): \(error.message)")
        } catch {
            throw IdentityError(.malformedCertificate, "\(path) holds no readable PEM certificates: \(error)")
        }
    }

    /// Every certificate of a PEM bundle, in order.
    public static func bundle(pem: String) throws -> [Certificate] {
        let documents = try PEMDocument.parseMultiple(pemString: pem)
        guard !documents.isEmpty else { throw IdentityError(.malformedCertificate, "no PEM certificate found") }
        return try documents.map {
            guard $0.discriminator == "CERTIFICATE" else {
                throw IdentityError(.malformedCertificate, "expected PEM CERTIFICATE blocks, found '\($0.discriminator)'")
            }
            return try Certificate(derEncoded: $0.derBytes)
        }
    }
}

extension Certificate.SerialNumber {
    /// Two hex digits a byte, colon-separated, as OpenSSL prints serials.
    public var hex: String { bytes.map { String(format: "%02x", $0) }.joined(separator: ":") }
}
