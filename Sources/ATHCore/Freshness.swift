import Crypto
import Foundation

/// Timestamps and nonces: what makes a captured message useless later.
public enum Freshness {
    /// Seconds a message's timestamp may differ from the receiver's clock (seed 000: 5 minutes).
    public static let maxSkew: Int64 = 300

    public static func check(_ timestamp: Int64, now: Date, step: Int?) throws {
        let t = Int64(now.timeIntervalSince1970)
        guard abs(t - timestamp) <= maxSkew else {
            throw ATHError(.timestampOutOfRange, "timestamp \(timestamp) is more than \(maxSkew) s from the server's clock \(t)", step: step)
        }
    }

    public static func unix(_ date: Date) -> Int64 { Int64(date.timeIntervalSince1970) }
}

/// 256-bit values from the system CSPRNG, base64url: nonces, ids, jti.
public enum Nonce {
    public static func generate(bytes: Int = 32) -> String {
        Base64URL.encode(SystemRandom.bytes(bytes))
    }

    /// A peer's nonce must carry at least 128 bits: 22 or more base64url characters, at most 128.
    public static func validate(_ nonce: String, step: Int) throws {
        guard (22...128).contains(nonce.utf8.count), Base64URL.decode(nonce) != nil else {
            throw ATHError(.malformedMessage, "nonce must be 22-128 base64url characters (>= 128 random bits)", step: step)
        }
    }
}
