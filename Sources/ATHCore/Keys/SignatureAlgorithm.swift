/// The signature algorithms ATH accepts: both give at least 128-bit security, as the seed's
/// ">= 256-bit signatures" requires (256-bit keys).
public enum SignatureAlgorithm: String, Sendable, Codable, CaseIterable, Comparable {
    case es256 = "ES256"
    case edDSA = "EdDSA"

    /// Preference when both peers offer several: EdDSA first (deterministic signatures, no
    /// per-signature randomness to get wrong), then ES256, which every peer must support.
    public static let preference: [SignatureAlgorithm] = [.edDSA, .es256]

    public static func < (a: Self, b: Self) -> Bool {
        preference.firstIndex(of: a)! > preference.firstIndex(of: b)!
    }
}
