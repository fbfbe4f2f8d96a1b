import Crypto
import Foundation

/// Timestamps and nonces: what makes a captured message useless later.
public enum Freshness {
    /// Seconds a message's timestamp may differ from the receiver's clock (seed 000: 5 minutes).
    public static let maxSkew: Int64 = 300

    public static func check(_ timestamp: Int64, now: Date, step: Int?) throws {
        let t = unix(now)
        guard within(maxSkew, timestamp, of: t) else {
            throw ATHError(.timestampOutOfRange, "timestamp \(timestamp) is more than \(maxSkew) s from the server's clock \(t)", step: step)
        }
    }

    public static func unix(_ date: Date) -> Int64 { Int64(date.timeIntervalSince1970) }

    /// Whether `timestamp` lies at most `tolerance` seconds from `now`, for any two values a peer
    /// could send: `abs(now - timestamp)` traps when the difference does not fit in 64 bits (a
    /// timestamp of `Int64.min`), and a trap ends the whole server.
    public static func within(_ tolerance: Int64, _ timestamp: Int64, of now: Int64) -> Bool {
        let (difference, overflow) = now.subtractingReportingOverflow(timestamp)
        return !overflow && difference.magnitude <= tolerance.magnitude
    }

    /// `exp - iat` of a token, nil when the claims are out of order or the difference does not
    /// fit (claims a forger chose at the edges of the 64-bit range).
    public static func lifetime(issuedAt iat: Int64, expiresAt exp: Int64) -> Int64? {
        let (lifetime, overflow) = exp.subtractingReportingOverflow(iat)
        return overflow || lifetime < 0 ? nil : lifetime
    }
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
