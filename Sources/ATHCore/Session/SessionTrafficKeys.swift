import Crypto
import Foundation

/// The AEAD a session uses: the handshake's `cipher_suite`, AES-256-GCM by default.
public enum SessionCipherSuite: String, Sendable, Codable, CaseIterable {
    case aes256gcm = "AES-256-GCM"
    case chacha20poly1305 = "CHACHA20-POLY1305"
}

/// One direction's keys in one epoch. Epoch 0 comes from the handshake's per-direction secret
/// (`ath/0.1 c2s` or `s2c`, §6); each key update derives the next secret from the current one,
/// so a key found later reveals nothing earlier, and no key is ever used under two directions.
///
///     key    = HKDF-Expand(secret, "attn/1 key", 32)
///     iv     = HKDF-Expand(secret, "attn/1 iv", 12)
///     next   = HKDF-Expand(secret, "attn/1 update", 32)
///     nonce  = iv XOR (4 zero bytes | sequence, 8 bytes big-endian)      (as TLS 1.3)
public struct SessionTrafficKeys: Sendable {
    public let epoch: UInt8
    public let suite: SessionCipherSuite
    let secret: SymmetricKey
    let key: SymmetricKey
    let iv: [UInt8]

    public init(secret: SymmetricKey, suite: SessionCipherSuite, epoch: UInt8 = 0) {
        self.secret = secret
        self.suite = suite
        self.epoch = epoch
        key = HKDF<SHA256>.expand(pseudoRandomKey: secret, info: Data("attn/1 key".utf8), outputByteCount: 32)
        iv = Array(HKDF<SHA256>.expand(pseudoRandomKey: secret, info: Data("attn/1 iv".utf8), outputByteCount: 12).bytes)
    }

    /// The next epoch's keys; nil after epoch 255 (the session must then end).
    public func next() -> SessionTrafficKeys? {
        guard epoch < UInt8.max else { return nil }
        let secret = HKDF<SHA256>.expand(pseudoRandomKey: self.secret, info: Data("attn/1 update".utf8), outputByteCount: 32)
        return SessionTrafficKeys(secret: secret, suite: suite, epoch: epoch + 1)
    }

    /// The nonce for `sequence`, built on the stack (one allocation less per frame).
    func withNonce<R>(_ sequence: UInt64, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        var storage: (UInt64, UInt32) = (0, 0)  // 12 bytes
        return try withUnsafeMutableBytes(of: &storage) { nonce in
            for i in 0..<12 { nonce[i] = iv[i] }
            withUnsafeBytes(of: sequence.bigEndian) { seq in
                for i in 0..<8 { nonce[4 + i] ^= seq[i] }
            }
            return try body(UnsafeRawBufferPointer(rebasing: nonce[0..<12]))
        }
    }

    /// The frame: `header`, then the ciphertext and the tag, written once into one buffer.
    /// `header` should have room for the rest (`SessionFrame.Header.bytes(reservingCapacity:)`):
    /// the frame is then written into its buffer.
    func seal(_ plaintext: [UInt8], sequence: UInt64, header: [UInt8]) throws -> [UInt8] {
        var frame = header
        // A no-op when the header's buffer is ours and has the room; otherwise one copy of 28
        // bytes now rather than growing (and copying) the whole frame while appending.
        frame.reserveCapacity(header.count + plaintext.count + SessionFrame.tagSize)
        switch suite {
        case .aes256gcm:
            let box = try AES.GCM.seal(plaintext, using: key, nonce: try withNonce(sequence) { try AES.GCM.Nonce(data: $0) }, authenticating: frame)
            frame.append(contentsOf: box.ciphertext)
            frame.append(contentsOf: box.tag)
        case .chacha20poly1305:
            let box = try ChaChaPoly.seal(
                plaintext, using: key, nonce: try withNonce(sequence) { try ChaChaPoly.Nonce(data: $0) }, authenticating: frame)
            frame.append(contentsOf: box.ciphertext)
            frame.append(contentsOf: box.tag)
        }
        return frame
    }

    /// The plaintext, or nil when the tag does not verify (nothing is returned unauthenticated).
    func open(_ sealed: ArraySlice<UInt8>, sequence: UInt64, header: ArraySlice<UInt8>) -> Data? {
        let ciphertext = sealed.dropLast(SessionFrame.tagSize)
        let tag = sealed.suffix(SessionFrame.tagSize)
        switch suite {
        case .aes256gcm:
            guard let nonce = try? withNonce(sequence, { try AES.GCM.Nonce(data: $0) }),
                let box = try? AES.GCM.SealedBox(nonce: nonce, ciphertext: ciphertext, tag: tag),
                let plain = try? AES.GCM.open(box, using: key, authenticating: header)
            else { return nil }
            return plain
        case .chacha20poly1305:
            guard let nonce = try? withNonce(sequence, { try ChaChaPoly.Nonce(data: $0) }),
                let box = try? ChaChaPoly.SealedBox(nonce: nonce, ciphertext: ciphertext, tag: tag),
                let plain = try? ChaChaPoly.open(box, using: key, authenticating: header)
            else { return nil }
            return plain
        }
    }

    /// For the published vectors.
    public var keyBytes: [UInt8] { Array(key.bytes) }
    public var ivBytes: [UInt8] { iv }
}
