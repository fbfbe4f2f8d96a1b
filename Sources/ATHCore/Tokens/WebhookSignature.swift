import Crypto
import Foundation

/// The signature on a webhook push (`ATH-Webhook-Signature`), made with a secret the platform and
/// the receiver share: `t=<unix seconds>,v1=<base64url HMAC-SHA256(secret, "<t>." + body)>`.
///
/// Why a shared-secret MAC rather than the server's signature: the receiver is the platform's
/// own push service, configured with the secret alongside the URL, and checking it needs no key
/// discovery. The timestamp is inside the MAC so a captured push cannot be replayed later; the
/// receiver also de-duplicates by `ATH-Webhook-Id`, which stays the same across retries.
public struct WebhookSignature: Sendable, Equatable {
    public static let header = "ATH-Webhook-Signature"
    public static let idHeader = "ATH-Webhook-Id"
    /// How far a push's time may be from the receiver's clock.
    public static let tolerance: Int64 = 300

    public var timestamp: Int64
    public var mac: String

    public var headerValue: String { "t=\(timestamp),v1=\(mac)" }

    public static func sign(_ body: some DataProtocol, secret: SymmetricKey, now: Date) -> WebhookSignature {
        let t = Freshness.unix(now)
        return WebhookSignature(timestamp: t, mac: Base64URL.encode(Data(HMAC<SHA256>.authenticationCode(for: input(t, body), using: secret))))
    }

    static func input(_ timestamp: Int64, _ body: some DataProtocol) -> [UInt8] {
        Array("\(timestamp).".utf8) + Array(body)
    }

    /// Parses the header; unknown parameters are ignored so a later version can add some.
    public init(headerValue: String) throws {
        var t: Int64?
        var v1: String?
        for part in headerValue.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2 else { continue }
            switch pair[0] {
            case "t": t = Int64(pair[1])
            case "v1": v1 = pair[1]
            default: continue
            }
        }
        guard let t, let v1 else { throw ATHError(.malformedMessage, "\(Self.header) needs t=<unix seconds> and v1=<mac>") }
        self.init(timestamp: t, mac: v1)
    }

    public init(timestamp: Int64, mac: String) {
        self.timestamp = timestamp
        self.mac = mac
    }

    /// The receiver's check: the MAC in constant time, then the time.
    public func verify(_ body: some DataProtocol, secret: SymmetricKey, now: Date) throws {
        guard let raw = Base64URL.decode(mac),
            HMAC<SHA256>.isValidAuthenticationCode(raw, authenticating: Self.input(timestamp, body), using: secret)
        else { throw ATHError(.invalidSignature, "the webhook signature does not match this body and secret") }
        guard Freshness.within(Self.tolerance, timestamp, of: Freshness.unix(now)) else {
            throw ATHError(.timestampOutOfRange, "the webhook was signed at \(timestamp), too far from now")
        }
    }
}
