import ATHCore
import Foundation

/// Handshakes in progress, each a document with a revision (check-and-set).
public protocol HandshakeStore: Sendable {
    /// Step 1 in one transaction: records the step-1 nonce `nonce` (single use until
    /// `nonceExpiresAt`), the new handshake and its audit records. False, with nothing written,
    /// when the nonce was used already. One write per step 1, however many arrive.
    func beginHandshake(_ handshake: ServerHandshake, nonce: String, nonceExpiresAt: Int64, now: Int64, audit: [AuditEvent]) async throws
        -> Bool
    /// Deletes the handshakes that ended without a grant (refused, or past their deadline)
    /// before `endedBefore`, and single-use values expired by `now`; returns how many of each.
    /// Completed handshakes stay with their grants.
    func purge(handshakesEndedBefore endedBefore: Int64, now: Int64) async throws -> (handshakes: Int, nonces: Int)
    func handshake(id: String) async throws -> StoredHandshake?
    func handshake(requestID: String) async throws -> StoredHandshake?
    /// The revision alone (nil: no such handshake): what a waiter reads to learn whether to load.
    func handshakeRevision(id: String) async throws -> Int?
    func pendingConfirmations(userDID: String, now: Int64) async throws -> [ServerHandshake]
    /// Saves a changed handshake if nobody else changed it since `revision` was read;
    /// throws UNEXPECTED_MESSAGE otherwise. With a completion, also creates grant, session and
    /// token; the session's proof key arrives sealed (`SecretSealer`): a store never holds it in
    /// the clear. In the same transaction it refuses the completion, writing nothing, when the
    /// credential was revoked (CREDENTIAL_REVOKED) or either party suspended (ACCOUNT_SUSPENDED).
    func updateHandshake(
        _ handshake: ServerHandshake, expectedRevision: Int, completion: ServerHandshake.Completion?, sealedProofKey: Data?,
        audit: [AuditEvent]
    ) async throws
}
