import Foundation

/// Signing in to the consent console with a key held by the browser.
///
/// The console never sees a password: the browser makes a P-256 key with WebCrypto (not
/// extractable), the user enrolls its public key with a one-time token signed by a key the
/// account already has (`ath user enroll-browser`), and each sign-in is a signature over a
/// server challenge. The same key signs step 7, so the console's approvals are verified like any
/// other (docs/PROTOCOL.md, "Consent console").
public enum ConsoleLogin {
    /// The `typ` of the enrollment token (claims as `UserRequestToken`'s).
    public static let enrollmentTyp = "ath-console-enroll+jwt"
    public static let context = "ATH/0.1 console login"

    /// What the browser signs to sign in: the canonical JSON of
    /// `{"challenge", "context", "server_did", "user_did"}`, ES256 over SHA-256, raw r‖s.
    public static func signingInput(server: DID, user: DID, challenge: String) throws -> [UInt8] {
        try CanonicalJSON.bytes(
            .object([
                "challenge": .string(challenge), "context": .string(context), "server_did": .string(server.value),
                "user_did": .string(user.value),
            ]))
    }
}
