import Crypto
import Foundation

/// Proof that the sender of an API request holds the session key of step 9, so that a stolen
/// access token alone is useless.
///
/// Header `ATH-Proof: t=<unix seconds>, n=<nonce>, mac=<base64url HMAC-SHA256>`; the MAC key is
/// the session's proof key and the MAC covers, joined by "\n":
/// `ATH-POP/0.1`, the method, the request target (path and query as sent), t, n,
/// base64url(SHA-256(body)) and base64url(SHA-256(access token)).
public struct PossessionProof: Sendable, Equatable {
    public static let header = "ATH-Proof"
    public var timestamp: Int64
    public var nonce: String
    public var mac: String

    public init(timestamp: Int64, nonce: String, mac: String) {
        self.timestamp = timestamp
        self.nonce = nonce
        self.mac = mac
    }

    static func input(method: String, target: String, timestamp: Int64, nonce: String, body: some DataProtocol, token: String) -> Data {
        let lines = [
            "ATH-POP/0.1", method.uppercased(), target, String(timestamp), nonce,
            Base64URL.encode(Data(SHA256.hash(data: Data(body)))), Base64URL.encode(Data(SHA256.hash(data: Data(token.utf8)))),
        ]
        return Data(lines.joined(separator: "\n").utf8)
    }

    public static func make(
        key: SymmetricKey, method: String, target: String, body: some DataProtocol, token: String, now: Date,
        nonce: String = Nonce.generate(bytes: 16)
    ) -> PossessionProof {
        let t = Freshness.unix(now)
        let mac = HMAC<SHA256>.authenticationCode(
            for: input(method: method, target: target, timestamp: t, nonce: nonce, body: body, token: token), using: key)
        return PossessionProof(timestamp: t, nonce: nonce, mac: Base64URL.encode(Data(mac)))
    }

    public var headerValue: String { "t=\(timestamp), n=\(nonce), mac=\(mac)" }

    public init(headerValue: String) throws {
        var fields: [String: String] = [:]
        guard headerValue.utf8.count <= 512 else { throw ATHError(.proofInvalid, "ATH-Proof header is too long") }
        for part in headerValue.split(separator: ",") {
            let kv = part.drop(while: { $0 == " " }).split(separator: "=", maxSplits: 1)
            guard kv.count == 2, fields[String(kv[0])] == nil else { throw ATHError(.proofInvalid, "malformed ATH-Proof header") }
            fields[String(kv[0])] = String(kv[1])
        }
        guard fields.count == 3, let t = fields["t"].flatMap({ Int64($0) }), let n = fields["n"], let mac = fields["mac"],
            (16...64).contains(n.utf8.count)
        else { throw ATHError(.proofInvalid, "ATH-Proof needs t, n and mac") }
        self.init(timestamp: t, nonce: n, mac: mac)
    }

    /// Constant-time check of the MAC, then of the time; the caller checks the nonce is new.
    public func verify(key: SymmetricKey, method: String, target: String, body: some DataProtocol, token: String, now: Date) throws {
        guard let raw = Base64URL.decode(mac),
            HMAC<SHA256>.isValidAuthenticationCode(
                raw, authenticating: Self.input(method: method, target: target, timestamp: timestamp, nonce: nonce, body: body, token: token),
                using: key)
        else { throw ATHError(.proofInvalid, "ATH-Proof does not match this request and session") }
        guard abs(Freshness.unix(now) - timestamp) <= Freshness.maxSkew else {
            throw ATHError(.proofInvalid, "ATH-Proof timestamp is stale or in the future")
        }
    }
}
