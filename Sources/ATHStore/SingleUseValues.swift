import ATHCore
import Foundation

/// Values that may be used once until they expire: step-1 nonces, jtis, proof nonces, sign-in
/// challenges. What a replay across instances must find.
public protocol SingleUseValues: Sendable {
    /// Records a single-use value, with `audit` in the same transaction; false (nothing written)
    /// when it was already recorded and not yet expired.
    func consumeNonce(_ key: String, expiresAt: Int64, now: Int64, audit: [AuditEvent]) async throws -> Bool
    /// Whether a single-use value is recorded and not yet expired, without recording it.
    func isNonceRecorded(_ key: String, now: Int64) async throws -> Bool
}

extension SingleUseValues {
    /// A single-use value whose use is recorded elsewhere (the refusal of its reuse, the action it guards).
    public func consumeNonce(_ key: String, expiresAt: Int64, now: Int64) async throws -> Bool {
        try await consumeNonce(key, expiresAt: expiresAt, now: now, audit: [])
    }
}
