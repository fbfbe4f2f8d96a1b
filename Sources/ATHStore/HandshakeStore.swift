import ATHCore
import Foundation

/// Handshakes in progress, each a document with a revision (check-and-set).
public protocol HandshakeStore: Sendable {
    /// A handshake's first write, at step 3 (step 1 writes nothing: `HandshakeTicket`), in one
    /// transaction: records the step-1 nonce `nonce` (single use until `nonceExpiresAt`), the
    /// handshake and its audit records. False, with nothing written, when the nonce was used
    /// already. Throws ACCOUNT_SUSPENDED (step 3), writing nothing, when the agent's account is
    /// suspended: checked in the same transaction rather than read before it.
    func beginHandshake(_ handshake: ServerHandshake, nonce: String, nonceExpiresAt: Int64, now: Int64, audit: [AuditEvent]) async throws
        -> Bool
    /// Deletes what retention no longer keeps (docs/STORAGE.md, "Retention"): handshakes that
    /// ended without a grant (refused, or past their deadline) before `endedBefore`; grants that
    /// ended (expired or revoked) before it, with their sessions, tokens and handshakes; and
    /// single-use values expired by `now`. Audit records stay. A grant in force stays whole.
    func purge(handshakesEndedBefore endedBefore: Int64, now: Int64) async throws -> PurgedRecords
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

/// What one retention sweep deleted.
public struct PurgedRecords: Sendable, Equatable {
    /// Handshakes, those of the ended grants among them.
    public var handshakes: Int
    /// Grants, each with its session and tokens.
    public var grants: Int
    /// Expired single-use values.
    public var nonces: Int

    /// Grants deleted per transaction: a backlog (the first sweep after an upgrade, a year of
    /// grants) never holds the store's write lock for long.
    public static let batch = 500

    public init(handshakes: Int, grants: Int, nonces: Int) {
        self.handshakes = handshakes
        self.grants = grants
        self.nonces = nonces
    }
}
