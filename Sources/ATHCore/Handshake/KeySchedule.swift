import Crypto
import Foundation

/// The step-9 key exchange and what is derived from it.
///
/// Both sides contribute an ephemeral key (the client in step 5, the server in step 9), so the
/// secrets are forward-secret; HKDF-SHA256 with the transcript hash through step 8 as salt binds
/// them to this handshake. Outputs, each 32 bytes unless noted, by `info` label:
/// "ath/0.1 pop" (request proof key), "ath/0.1 c2s" and "ath/0.1 s2c" (session-layer keys, one
/// per direction), "ath/0.1 sid" (16 bytes, the session id).
public enum KeyExchangeAlgorithm: String, Sendable, Codable, CaseIterable {
    case ecdhP256 = "ECDH-P256"
    case x25519 = "X25519"

    /// Refuses a step-5 key share that step 9 could not use, before the user is asked to approve
    /// a handshake that cannot complete: a P-256 point must be on the curve (swift-crypto checks
    /// it when reading the point), an X25519 key 32 bytes and not of small order (an agreement
    /// with it gives the all-zero secret whatever the other key: step 9's own agreement with a
    /// throwaway key tells).
    public func validate(publicKey: String) throws {
        do {
            switch self {
            case .ecdhP256:
                guard let raw = Base64URL.decode(publicKey) else { throw ATHError(.malformedMessage, "key share is not base64url") }
                _ = try P256.KeyAgreement.PublicKey(x963Representation: raw)
            case .x25519: _ = try EphemeralKey.generate(.x25519).sharedSecret(with: publicKey)
            }
        } catch {
            throw ATHError(.malformedMessage, "key_exchange.public_key is not a valid \(rawValue) public key", step: 5)
        }
    }
}

/// One side's ephemeral private key.
public enum EphemeralKey: Sendable {
    case p256(P256.KeyAgreement.PrivateKey)
    case x25519(Curve25519.KeyAgreement.PrivateKey)

    public static func generate(_ alg: KeyExchangeAlgorithm) -> EphemeralKey {
        switch alg {
        case .ecdhP256: .p256(freshP256())
        case .x25519: .x25519(Curve25519.KeyAgreement.PrivateKey())
        }
    }

    /// A uniformly random scalar in [1, n-1] by rejection sampling (FIPS 186-5 A.2.2), from the
    /// system CSPRNG. swift-crypto's own generator adds the FIPS pairwise-consistency self-test
    /// (an ECDSA sign and verify) to every key: it tripled the cost of the server's step 9 for a
    /// key used once, for one ECDH.
    static func freshP256() -> P256.KeyAgreement.PrivateKey {
        withUnsafeTemporaryAllocation(byteCount: 32, alignment: 8) { scalar in
            defer { scalar.initializeMemory(as: UInt8.self, repeating: 0) }
            while true {
                SystemRandom.fill(scalar)
                // Refused when zero or not below the group order; then draw again.
                if let key = try? P256.KeyAgreement.PrivateKey(rawRepresentation: UnsafeRawBufferPointer(scalar)) { return key }
            }
        }
    }

    public var algorithm: KeyExchangeAlgorithm {
        switch self {
        case .p256: .ecdhP256
        case .x25519: .x25519
        }
    }

    /// base64url of the uncompressed P-256 point or the raw X25519 key.
    public var publicKey: String {
        switch self {
        case .p256(let k): Base64URL.encode(k.publicKey.x963Representation)
        case .x25519(let k): Base64URL.encode(k.publicKey.rawRepresentation)
        }
    }

    /// The raw representation, kept while a handshake waits (server side: never; client: in memory).
    public var rawRepresentation: Data {
        switch self {
        case .p256(let k): k.rawRepresentation
        case .x25519(let k): k.rawRepresentation
        }
    }

    public init(alg: KeyExchangeAlgorithm, raw: Data) throws {
        switch alg {
        case .ecdhP256: self = .p256(try P256.KeyAgreement.PrivateKey(rawRepresentation: raw))
        case .x25519: self = .x25519(try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: raw))
        }
    }

    public func sharedSecret(with peer: String) throws -> SharedSecret {
        guard let raw = Base64URL.decode(peer) else {
            throw ATHError(.malformedMessage, "key share is not base64url")
        }
        let refusal = ATHError(.malformedMessage, "key share is not a valid \(algorithm.rawValue) public key")
        let secret: SharedSecret
        do {
            switch self {
            case .p256(let k):
                secret = try k.sharedSecretFromKeyAgreement(with: P256.KeyAgreement.PublicKey(x963Representation: raw))
            case .x25519(let k):
                secret = try k.sharedSecretFromKeyAgreement(with: Curve25519.KeyAgreement.PublicKey(rawRepresentation: raw))
            }
        } catch {
            throw refusal
        }
        // RFC 7748 §6.1: a peer's small-order X25519 key makes the secret all zeros, known to anyone.
        guard !secret.withUnsafeBytes({ $0.allSatisfy { $0 == 0 } }) else { throw refusal }
        return secret
    }
}

/// The secrets one handshake yields.
public struct SessionSecrets: Sendable, Equatable {
    public var sessionID: String
    public var proofKey: SymmetricKey
    public var clientToServer: SymmetricKey
    public var serverToClient: SymmetricKey

    public static func == (a: Self, b: Self) -> Bool {
        a.sessionID == b.sessionID && a.proofKey == b.proofKey && a.clientToServer == b.clientToServer
            && a.serverToClient == b.serverToClient
    }

    public init(shared: SharedSecret, transcriptHash: Data) {
        self = shared.withUnsafeBytes { Self(inputKeyMaterial: $0, salt: transcriptHash) }
    }

    /// HKDF-SHA256 (RFC 5869): one Extract, then one Expand per label, each a single HMAC block
    /// since no output is longer than SHA-256's 32 bytes. Written on swift-crypto's HMAC rather
    /// than called through its `HKDF`, whose generic code took 13.5 µs for these five steps
    /// against 7.5 µs here (`ath bench crypto`), on both sides of every handshake; the outputs
    /// are the same bytes (tested against `HKDF<SHA256>`).
    init(inputKeyMaterial: UnsafeRawBufferPointer, salt: Data) {
        let prk = HMAC<SHA256>.authenticationCode(for: inputKeyMaterial, using: SymmetricKey(data: salt))
        // Keyed once; each label continues from a copy of the keyed state.
        let keyed = HMAC<SHA256>(key: SymmetricKey(data: prk))
        func derive(_ label: StaticString, _ count: Int = 32) -> SymmetricKey {
            var block = keyed
            block.update(data: UnsafeRawBufferPointer(start: label.utf8Start, count: label.utf8CodeUnitCount))
            withUnsafeBytes(of: UInt8(1)) { block.update(data: $0) }
            return block.finalize().withUnsafeBytes { SymmetricKey(data: $0.prefix(count)) }
        }
        sessionID = Base64URL.encode(derive("ath/0.1 sid", 16).withUnsafeBytes { Data($0) })
        proofKey = derive("ath/0.1 pop")
        clientToServer = derive("ath/0.1 c2s")
        serverToClient = derive("ath/0.1 s2c")
    }

    public init(sessionID: String, proofKey: SymmetricKey, clientToServer: SymmetricKey, serverToClient: SymmetricKey) {
        self.sessionID = sessionID
        self.proofKey = proofKey
        self.clientToServer = clientToServer
        self.serverToClient = serverToClient
    }
}

extension SymmetricKey {
    public var bytes: Data { withUnsafeBytes { Data($0) } }
}
