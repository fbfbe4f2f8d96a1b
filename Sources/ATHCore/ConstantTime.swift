import Crypto
import Foundation

/// Comparing secrets (a CSRF token, an OAuth state, a nonce) without leaking, through timing,
/// how much of a guess was right: the two values' SHA-256 digests are compared, which
/// swift-crypto does in constant time, and lengths never matter.
public enum ConstantTime {
    public static func equal(_ a: String, _ b: String) -> Bool {
        SHA256.hash(data: Data(a.utf8)) == SHA256.hash(data: Data(b.utf8))
    }
}
