/// An ACPs agent identity code (AIC), current ten-level format: `1.2.156.3088.V.ARSP.VENDOR.ONTOLOGY.ENTITY.CHECK`.
///
/// Why we check it ourselves: the AIC is what a CAI certificate's CN and SAN name, and what the
/// handshake's client identity must match, so a malformed one has to be refused with a reason
/// naming the part at fault, before anything trusts it. Levels are case-insensitive and kept upper
/// case. The checksum is CRC-16/CCITT-FALSE over levels 1-9 (with their dots, upper case) followed
/// by the registration provider's secret salt, written as 4 base36 digits; without the salt only
/// the format can be checked (`init(parsing:)`), with it the checksum too (`verifyChecksum`).
public struct AgentIdentityCode: Sendable, Hashable, CustomStringConvertible {
    public static let prefix = "1.2.156.3088"

    public let version: String
    /// The registration service provider (ARSP).
    public let arsp: String
    public let vendor: String
    /// The agent kind's serial.
    public let ontology: String
    /// The running instance's serial; empty or all zeros for the ontology itself.
    public let entity: String
    public let checksum: String

    /// Levels 1-9 with their dots: what the checksum covers.
    public var body: String { [Self.prefix, version, arsp, vendor, ontology, entity].joined(separator: ".") }
    public var description: String { body + "." + checksum }
    public var isOntology: Bool { entity.allSatisfy { $0 == "0" } }

    /// Format only: every level's length and alphabet, and a checksum in range.
    public init(parsing text: String) throws {
        let levels = text.uppercased().split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard levels.count == 10 else {
            throw Self.malformed("an AIC has 10 dot-separated levels, this has \(levels.count)")
        }
        guard levels[0..<4].joined(separator: ".") == Self.prefix else {
            throw Self.malformed("levels 1-4 must be \(Self.prefix)")
        }
        try Self.check(levels[4], level: 5, name: "version", 1...1)
        try Self.check(levels[5], level: 6, name: "registration provider", 1...6)
        try Self.check(levels[6], level: 7, name: "vendor", 1...6)
        try Self.check(levels[7], level: 8, name: "ontology serial", 1...9)
        try Self.check(levels[8], level: 9, name: "entity serial", 0...9)
        try Self.check(levels[9], level: 10, name: "checksum", 4...4)
        guard let value = Int(levels[9], radix: 36), value <= 0xFFFF else {
            throw Self.malformed("level 10 (checksum) must be 0000-1EKF, got '\(levels[9].prefix(16))'")
        }
        (version, arsp, vendor, ontology, entity, checksum) = (levels[4], levels[5], levels[6], levels[7], levels[8], levels[9])
    }

    /// A new AIC with its checksum under `salt`.
    public init(version: String, arsp: String, vendor: String, ontology: String, entity: String, salt: [UInt8]) throws {
        let body = [Self.prefix, version, arsp, vendor, ontology, entity].joined(separator: ".").uppercased()
        try self.init(parsing: body + "." + (try Self.checksum(of: body, salt: salt)))
    }

    /// Refuses an AIC whose checksum does not match under `salt`.
    public func verifyChecksum(salt: [UInt8]) throws {
        let expected = try Self.checksum(of: body, salt: salt)
        guard expected == checksum else {
            throw Self.malformed("the AIC's checksum \(checksum) does not match its levels under this registration provider's salt")
        }
    }

    /// CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, not reflected, no final xor) of `body` and
    /// `salt`, as 4 base36 digits.
    public static func checksum(of body: String, salt: [UInt8]) throws -> String {
        guard salt.count >= 2 else { throw malformed("an AIC salt has at least 2 bytes") }
        var crc: UInt16 = 0xFFFF
        for byte in Array(body.uppercased().utf8) + salt {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        }
        let digits = String(crc, radix: 36, uppercase: true)
        return String(repeating: "0", count: 4 - digits.count) + digits
    }

    /// `0-9` or `A-Z` (codes are upper-cased before they are checked).
    static func isBase36(_ byte: UInt8) -> Bool { (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) }

    static func check(_ level: String, level number: Int, name: String, _ length: ClosedRange<Int>) throws {
        guard length.contains(level.count), level.utf8.allSatisfy(isBase36) else {
            let size = length.lowerBound == length.upperBound ? "\(length.lowerBound)" : "\(length.lowerBound)-\(length.upperBound)"
            throw malformed("level \(number) (\(name)) must be \(size) base36 characters, got '\(level.prefix(16))'")
        }
    }

    static func malformed(_ message: String) -> ATHError { ATHError(.malformedMessage, "invalid AIC: " + message) }
}
