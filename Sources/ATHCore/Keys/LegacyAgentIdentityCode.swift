/// The older ACPs agent identity code (spec v01.00): 32 characters, `[0-9A-Z]{30}` followed by
/// two decimal check digits, e.g. `10001000011K912345E789ABCDEF2353`.
///
/// Read, not issued: agents registered under v01.00 still present these codes, and the older
/// ACPs CA named them in certificate CNs (`<AIC>.acps.pub`). The check is ISO 7064 MOD 97-10
/// over the body read as one base-36 number N: the digits are 98 − (N × 100 mod 97), so that
/// N × 100 + digits ≡ 1 (mod 97). The body's inner fields are not split out here: only its
/// alphabet and length are normative in what we have of v01.00.
public struct LegacyAgentIdentityCode: Sendable, Hashable, CustomStringConvertible {
    public static let length = 32
    /// The 30 base-36 characters before the check digits.
    public let body: String
    public let checkDigits: String
    public var description: String { body + checkDigits }

    public init(parsing text: String) throws {
        let code = text.uppercased()
        guard code.utf8.count == Self.length else {
            throw Self.malformed("a v01.00 AIC has 32 characters, this has \(code.utf8.count)")
        }
        let body = String(code.prefix(30))
        let digits = String(code.suffix(2))
        if let bad = body.first(where: { $0.asciiValue.map(AgentIdentityCode.isBase36) != true }) {
            throw Self.malformed("characters 1-30 are 0-9 or A-Z; '\(bad)' is not")
        }
        guard digits.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            throw Self.malformed("characters 31-32 are the two decimal check digits, got '\(digits)'")
        }
        let expected = Self.checkDigits(of: body)
        guard digits == expected else {
            throw Self.malformed("the check digits \(digits) do not match the code (MOD 97-10 gives \(expected))")
        }
        self.body = body
        self.checkDigits = digits
    }

    /// The two check digits of a 30-character body (ISO 7064 MOD 97-10 of its base-36 value).
    /// A character outside 0-9 and A-Z counts as 0 (the initializer refuses such a body first).
    public static func checkDigits(of body: String) -> String {
        var remainder = 0
        for character in body.uppercased() {
            remainder = (remainder * 36 + (Int(String(character), radix: 36) ?? 0)) % 97
        }
        let check = 98 - (remainder * 100) % 97
        return check < 10 ? "0\(check)" : "\(check)"
    }

    static func malformed(_ why: String) -> ATHError { ATHError(.malformedMessage, "invalid v01.00 AIC: \(why)") }
}
