import Crypto

/// HMAC-SHA256 (RFC 2104) under one session's proof key: the MAC of every API request's proof.
///
/// swift-crypto's `HMAC<H>` is generic and not inlinable, so outside swift-crypto it runs
/// unspecialized, each hash call going through witness tables and runtime type metadata.
/// Between HTTP requests, where the check's code starts from cold caches, that made the MAC
/// the largest part of the access check (`ath bench middleware`, docs/PERFORMANCE.md). This is
/// the same construction over swift-crypto's concrete `SHA256`, with the key's inner and outer
/// blocks absorbed once per session: each MAC continues from copies of the two states. Tests
/// compare it with `HMAC<SHA256>` for keys and messages of many lengths.
public struct ProofMAC: Sendable {
    private let inner: SHA256
    private let outer: SHA256

    public init(key: SymmetricKey) {
        var block = [UInt8](repeating: 0, count: SHA256.blockByteCount)
        key.withUnsafeBytes { raw in
            if raw.count > SHA256.blockByteCount {
                SHA256.hash(data: raw).withUnsafeBytes { digest in block.replaceSubrange(0..<digest.count, with: digest) }
            } else {
                block.replaceSubrange(0..<raw.count, with: raw)
            }
        }
        var inner = SHA256()
        inner.update(data: block.map { $0 ^ 0x36 })
        var outer = SHA256()
        outer.update(data: block.map { $0 ^ 0x5C })
        (self.inner, self.outer) = (inner, outer)
    }

    /// The MAC of `message`.
    public func code(for message: UnsafeRawBufferPointer) -> SHA256Digest {
        var inner = self.inner
        inner.update(bufferPointer: message)
        var outer = self.outer
        inner.finalize().withUnsafeBytes { outer.update(bufferPointer: $0) }
        return outer.finalize()
    }

    /// Whether `mac`, base64url as the proof header carries it, is the MAC of `message`. The
    /// comparison is of the encoded forms, in constant time: only the one canonical spelling of
    /// the right MAC passes, and nothing is decoded from the header first. Nothing is
    /// allocated: the expected encoding is written on the stack.
    public func isValid(base64URL mac: Substring, for message: UnsafeRawBufferPointer) -> Bool {
        let code = self.code(for: message)
        var mac = mac
        return code.withUnsafeBytes { code in
            Base64URL.withEncoded(code) { expected in mac.withUTF8 { given in ConstantTime.equal(given, expected) } }
        }
    }

    public func isValid(base64URL mac: String, for message: [UInt8]) -> Bool {
        message.withUnsafeBytes { isValid(base64URL: mac[...], for: $0) }
    }
}
