import Foundation

/// Proof-of-possession nonces that every instance sees. A proof is accepted for ±300 s, so one
/// used on an instance must be refused on every other for that long: a store shared by several
/// instances keeps them, in batches (one round trip for many requests). A store that serves one
/// instance (SQLite) does not offer this; the server's memory suffices there.
public protocol SharedProofNonces: Sendable {
    /// Records each key until its expiry. For each, in order: true when it was new (or its
    /// earlier record had expired), false when another request used it already.
    func recordProofNonces(_ nonces: [ProofNonce], now: Int64) async throws -> [Bool]
}

public struct ProofNonce: Sendable, Hashable {
    /// A digest of (session, nonce): fixed size, whatever the client sent.
    public var key: String
    public var expiresAt: Int64

    public init(key: String, expiresAt: Int64) {
        (self.key, self.expiresAt) = (key, expiresAt)
    }
}
