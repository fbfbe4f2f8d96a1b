import Crypto
import Foundation

/// Comparing secrets (a CSRF token, an OAuth state, a nonce) without leaking, through timing,
/// how much of a guess was right: the two values' SHA-256 digests are compared, which
/// swift-crypto does in constant time, and lengths never matter.
public enum ConstantTime {
    public static func equal(_ a: String, _ b: String) -> Bool {
        SHA256.hash(data: Data(a.utf8)) == SHA256.hash(data: Data(b.utf8))
    }

    /// Equal bytes, in time that depends only on the lengths (which are not secret here: a MAC's
    /// encoded length is fixed, and cached tokens are found by their length first). For hot
    /// paths where hashing both sides first would cost more than the comparison; eight bytes a
    /// step, as the access check compares a 700-byte token header on every request.
    public static func equal(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>) -> Bool {
        guard a.count == b.count else { return false }
        let (x, y) = (UnsafeRawBufferPointer(a), UnsafeRawBufferPointer(b))
        var difference: UInt64 = 0
        var i = 0
        while i + 8 <= x.count {
            difference |= x.loadUnaligned(fromByteOffset: i, as: UInt64.self) ^ y.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            i += 8
        }
        while i < x.count {
            difference |= UInt64(x[i] ^ y[i])
            i += 1
        }
        return difference == 0
    }
}
