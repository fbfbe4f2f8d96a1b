import Crypto
import Foundation

/// Proof Key for Code Exchange (RFC 7636), S256 only: the verifier stays with whoever starts the
/// authorization (the gateway, never the agent), and only its hash travels in the browser.
public enum PKCE {
    /// A new verifier: 32 random bytes, base64url (43 characters, within RFC 7636's 43-128).
    public static func verifier() -> String { Nonce.generate(bytes: 32) }

    /// `BASE64URL(SHA256(ASCII(verifier)))`, RFC 7636 §4.2.
    public static func challenge(for verifier: String) -> String {
        Base64URL.encode(Data(SHA256.hash(data: Data(verifier.utf8))))
    }

    public static let method = "S256"
}
