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
    /// Nonce and MAC are slices: parsed from a header they are views of its value, not copies
    /// (the server parses one per request).
    public var nonce: Substring
    public var mac: Substring

    public init(timestamp: Int64, nonce: some StringProtocol, mac: some StringProtocol) {
        self.timestamp = timestamp
        self.nonce = Substring(nonce)
        self.mac = Substring(mac)
    }

    /// Calls `body` with the bytes the MAC covers, written into one temporary buffer (on the
    /// stack unless the target is long): this runs on every API request, on both sides, and
    /// building them in an array cost an allocation and a copy per part. Digests are given as
    /// their base64url text.
    static func withInput<R>(
        method: String, target: String, timestamp: Int64, nonce: Substring, bodyDigest: String, tokenDigest: String,
        _ body: (UnsafeRawBufferPointer) throws -> R
    ) rethrows -> R {
        let prefix: StaticString = "ATH-POP/0.1\n"
        // HTTP methods arrive upper-case; only a lower-case one pays for case mapping.
        let method = method.utf8.contains(where: { $0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z") }) ? method.uppercased() : method
        let capacity = prefix.utf8CodeUnitCount + method.utf8.count + target.utf8.count + nonce.utf8.count + bodyDigest.utf8.count
            + tokenDigest.utf8.count + 20 + 5
        return try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: capacity) { buffer in
            var end = 0
            func put(_ byte: UInt8) {
                buffer[end] = byte
                end += 1
            }
            func put(_ text: some StringProtocol) {
                var text = Substring(text)
                text.withUTF8 { utf8 in
                    _ = UnsafeMutableBufferPointer(rebasing: buffer[end...]).initialize(fromContentsOf: utf8)
                    end += utf8.count
                }
            }
            for byte in UnsafeBufferPointer(start: prefix.utf8Start, count: prefix.utf8CodeUnitCount) { put(byte) }
            put(method)
            put(0x0A)
            put(target)
            put(0x0A)
            // The timestamp in decimal, as String(timestamp) writes it: at most a sign and 19 digits.
            var digits = timestamp.magnitude
            let first = end
            repeat {
                put(UInt8(ascii: "0") + UInt8(digits % 10))
                digits /= 10
            } while digits > 0
            if timestamp < 0 { put(UInt8(ascii: "-")) }
            var written = UnsafeMutableBufferPointer(rebasing: buffer[first..<end])
            written.reverse()
            put(0x0A)
            put(nonce)
            put(0x0A)
            put(bodyDigest)
            put(0x0A)
            put(tokenDigest)
            return try body(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: buffer[..<end])))
        }
    }

    /// base64url(SHA-256(bytes)), as the proof input carries the body's and the token's digests.
    public static func digest(_ bytes: some DataProtocol) -> String {
        if bytes.isEmpty { return emptyDigest }
        return SHA256.hash(data: bytes).withUnsafeBytes { Base64URL.encode(Data($0)) }
    }

    /// Most API requests (every GET) have no body.
    static let emptyDigest = SHA256.hash(data: [UInt8]()).withUnsafeBytes { Base64URL.encode(Data($0)) }

    /// The token's digest; a server computes it once per token, not per request.
    public static func tokenDigest(_ token: String) -> String {
        digest(Array(token.utf8))
    }

    public static func make(
        key: SymmetricKey, method: String, target: String, body: some DataProtocol, token: String, now: Date,
        nonce: String = Nonce.generate(bytes: 16)
    ) -> PossessionProof {
        let t = Freshness.unix(now)
        let mac = withInput(method: method, target: target, timestamp: t, nonce: nonce[...], bodyDigest: digest(body), tokenDigest: tokenDigest(token)) {
            HMAC<SHA256>.authenticationCode(for: $0, using: key)
        }
        return PossessionProof(timestamp: t, nonce: nonce, mac: Base64URL.encode(Data(mac)))
    }

    public var headerValue: String { "t=\(timestamp), n=\(nonce), mac=\(mac)" }

    /// Parses `t=…, n=…, mac=…`: fields separated by commas (empty ones skipped), spaces
    /// before a field's name ignored, each name at most once, nothing else. Read in place from
    /// the header's bytes, as every API request has one.
    public init(headerValue: String) throws {
        guard headerValue.utf8.count <= 512 else { throw ATHError(.proofInvalid, "ATH-Proof header is too long") }
        var header = headerValue
        let fields = try header.withUTF8 { try Self.fields(of: $0) }
        let utf8 = headerValue.utf8
        // The ranges end at ASCII separators, which are never inside a multi-byte character.
        func slice(_ range: Range<Int>?) -> Substring? {
            range.map { Substring(utf8[utf8.index(utf8.startIndex, offsetBy: $0.lowerBound)..<utf8.index(utf8.startIndex, offsetBy: $0.upperBound)]) }
        }
        // The grammar of docs/PROTOCOL.md §6: t 1-19 digits (no sign), n 16-64 base64url characters.
        guard let digits = slice(fields.t), (1...19).contains(digits.utf8.count), digits.utf8.allSatisfy({ (0x30...0x39).contains($0) }),
            let t = Int64(digits), let n = slice(fields.n), let mac = slice(fields.mac),
            (16...64).contains(n.utf8.count), n.utf8.allSatisfy(Base64URL.isAlphabet)
        else {
            throw ATHError(.proofInvalid, "ATH-Proof needs t, n and mac")
        }
        self.init(timestamp: t, nonce: n, mac: mac)
    }

    /// Where each field's value lies in the header's bytes.
    private static func fields(of bytes: UnsafeBufferPointer<UInt8>) throws -> (t: Range<Int>?, n: Range<Int>?, mac: Range<Int>?) {
        var (t, n, mac): (Range<Int>?, Range<Int>?, Range<Int>?) = (nil, nil, nil)
        var start = 0
        while start < bytes.count {
            var end = start
            while end < bytes.count, bytes[end] != UInt8(ascii: ",") { end += 1 }
            defer { start = end + 1 }
            guard end > start else { continue }
            var name = start
            while name < end, bytes[name] == UInt8(ascii: " ") { name += 1 }
            var eq = name
            while eq < end, bytes[eq] != UInt8(ascii: "=") { eq += 1 }
            guard eq < end else { throw ATHError(.proofInvalid, "malformed ATH-Proof header") }
            let value = (eq + 1)..<end
            switch (eq - name, bytes[name]) {
            case (1, UInt8(ascii: "t")) where t == nil: t = value
            case (1, UInt8(ascii: "n")) where n == nil: n = value
            case (3, UInt8(ascii: "m")) where mac == nil && bytes[name + 1] == UInt8(ascii: "a") && bytes[name + 2] == UInt8(ascii: "c"):
                mac = value
            default: throw ATHError(.proofInvalid, "malformed ATH-Proof header")
            }
        }
        return (t, n, mac)
    }

    /// Constant-time check of the MAC, then of the time; the caller checks the nonce is new.
    public func verify(key: SymmetricKey, method: String, target: String, body: some DataProtocol, token: String, now: Date) throws {
        try verify(keyedMAC: ProofMAC(key: key), method: method, target: target, body: body, tokenDigest: Self.tokenDigest(token), now: now)
    }

    /// The same with the session's MAC already keyed (a server keeps it per session: keying
    /// costs two hash blocks per request otherwise) and the token's digest computed once.
    public func verify(
        keyedMAC: ProofMAC, method: String, target: String, body: some DataProtocol, tokenDigest: String, now: Date
    ) throws {
        let valid = Self.withInput(
            method: method, target: target, timestamp: timestamp, nonce: nonce, bodyDigest: Self.digest(body), tokenDigest: tokenDigest
        ) { keyedMAC.isValid(base64URL: mac, for: $0) }
        guard valid else {
            throw ATHError(.proofInvalid, "ATH-Proof does not match this request and session")
        }
        guard Freshness.within(Freshness.maxSkew, timestamp, of: Freshness.unix(now)) else {
            throw ATHError(.proofInvalid, "ATH-Proof timestamp is stale or in the future")
        }
    }
}
