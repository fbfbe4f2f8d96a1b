import ATHCore
import Foundation

/// Everything a server must remember across requests and restarts, behind one protocol so that
/// several instances can later share PostgreSQL instead of one SQLite file.
///
/// Contract: each method is atomic. `completeHandshake` writes the handshake, its grant, session
/// and token in one transaction, so a failure leaves no half-made grant.
public protocol ATHStore: Sendable {
    // Accounts (Act Auth): one internal id each, never leaving the store; one or more external
    // ids (the account's DID first); unique aliases; public keys. Lookups take any external id.
    // A duplicate id or alias throws `StoreError.duplicate` and writes nothing.
    //
    // Every change takes its audit records and appends them in the transaction that makes it:
    // a crash between the two can neither lose the record of a change nor record one that was
    // not made. Where the record names what the change found (the grants it ended, the token it
    // revoked), it is built by a closure called inside the transaction.
    func registerAccount(_ account: Account, key: PublicKey?, audit: [AuditEvent]) async throws
    func account(did: String) async throws -> Account?
    func account(alias: String) async throws -> Account?
    func addExternalID(_ externalID: String, to did: String, audit: [AuditEvent]) async throws
    func addAlias(_ alias: String, to did: String, audit: [AuditEvent]) async throws
    func addKey(did: String, key: PublicKey, audit: [AuditEvent]) async throws
    func revokeKey(did: String, kid: String, audit: [AuditEvent]) async throws
    /// Adds `newKey` and revokes `kid` in one transaction.
    func rotateKey(did: String, revoking kid: String, to newKey: PublicKey, audit: [AuditEvent]) async throws
    func activeKeys(did: String) async throws -> [PublicKey]
    /// Marks the account suspended (keeping the first time) and revokes, with their tokens, the
    /// grants in force in which any of its external ids is the agent or the user; returns their ids.
    func suspendAccount(did: String, now: Int64, audit: @Sendable (_ ended: [String]) -> [AuditEvent]) async throws -> [String]
    /// Sets (nil: clears) the account's type on this service and, in the same transaction,
    /// revokes (with their tokens) the grants in force of the account for which `ends(grant,
    /// asAgent)` holds; returns their ids. Read and revoked in one transaction, so a grant made
    /// while the type changes is either seen here or made under the new type.
    func setAccountType(
        did: String, to type: String?, now: Int64, ending ends: @Sendable (_ grant: Grant, _ asAgent: Bool) -> Bool,
        audit: @Sendable (_ ended: [String]) -> [AuditEvent]
    ) async throws -> [String]
    /// The grants in force in which the account with external id `did` (under any of its
    /// external ids, or `did` itself when no account has it) is the agent or the user, oldest first.
    func activeGrants(did: String, now: Int64) async throws -> [Grant]
    /// Lifts a suspension; the grants it ended stay revoked.
    func reinstateAccount(did: String, audit: [AuditEvent]) async throws
    /// False for an id no account has.
    func isSuspended(did: String) async throws -> Bool

    /// Records a single-use value, with `audit` in the same transaction; false (nothing written)
    /// when it was already recorded and not yet expired.
    func consumeNonce(_ key: String, expiresAt: Int64, now: Int64, audit: [AuditEvent]) async throws -> Bool
    /// Whether a single-use value is recorded and not yet expired, without recording it.
    func isNonceRecorded(_ key: String, now: Int64) async throws -> Bool

    // Handshakes in progress.
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

    // Grants, sessions and tokens.
    func grant(id: String) async throws -> Grant?
    func session(id: String) async throws -> StoredSession?
    func token(jti: String) async throws -> StoredToken?
    /// Renewal as a check-and-set: revokes token `old` and records `new` if `old` was still
    /// unrevoked, in one transaction with the audit records; false (nothing written) when `old`
    /// was revoked already, by another renewal among others. One old token yields at most one new.
    func renewToken(revoking old: String, with new: StoredToken, now: Int64, audit: [AuditEvent]) async throws -> Bool
    /// Revokes the grant and every token of it; false (nothing written) when no grant has this id.
    func revokeGrant(id: String, now: Int64, audit: [AuditEvent]) async throws -> Bool

    // The user's pre-authorization credentials.
    /// Records that `userDID` revoked credential `jti` and revokes every grant made with it, in one
    /// transaction; returns the ids of those that were still in force. Revoking twice keeps the
    /// first time.
    func revokeCredential(jti: String, userDID: String, now: Int64, audit: @Sendable (_ ended: [String]) -> [AuditEvent]) async throws
        -> [String]
    func isCredentialRevoked(jti: String, userDID: String) async throws -> Bool
    /// The credentials of `userDID` that made grants or were revoked, newest first.
    func credentials(userDID: String, now: Int64) async throws -> [CredentialUse]
    /// Revokes one token; nil (nothing written) when no token has this id. The audit records are
    /// built from the token found.
    func revokeToken(jti: String, now: Int64, audit: @Sendable (StoredToken) -> [AuditEvent]) async throws -> StoredToken?

    // Audit.
    /// Appends in order, each record numbered one past the last and chained to it (`AuditChain`).
    func appendAudit(_ events: [AuditEvent]) async throws
    /// The newest `limit` records, oldest first.
    func auditEvents(limit: Int) async throws -> [AuditRecord]
    /// Up to `limit` records numbered above `sequence`, in order: the way to read the whole log.
    func auditRecords(after sequence: Int64, limit: Int) async throws -> [AuditRecord]
}

extension ATHStore {
    // The registry's changes without an audit record, for setting a store up (tests, `ath serve
    // --register`, the example), where no one's action is being recorded.
    public func registerAccount(_ account: Account, key: PublicKey?) async throws { try await registerAccount(account, key: key, audit: []) }
    public func addExternalID(_ externalID: String, to did: String) async throws { try await addExternalID(externalID, to: did, audit: []) }
    public func addAlias(_ alias: String, to did: String) async throws { try await addAlias(alias, to: did, audit: []) }
    public func addKey(did: String, key: PublicKey) async throws { try await addKey(did: did, key: key, audit: []) }
    public func revokeKey(did: String, kid: String) async throws { try await revokeKey(did: did, kid: kid, audit: []) }
    public func rotateKey(did: String, revoking kid: String, to newKey: PublicKey) async throws {
        try await rotateKey(did: did, revoking: kid, to: newKey, audit: [])
    }
    /// A single-use value whose use is recorded elsewhere (the refusal of its reuse, the action it guards).
    public func consumeNonce(_ key: String, expiresAt: Int64, now: Int64) async throws -> Bool {
        try await consumeNonce(key, expiresAt: expiresAt, now: now, audit: [])
    }
}

public struct StoredHandshake: Sendable {
    public var handshake: ServerHandshake
    public var revision: Int
}

public struct StoredSession: Sendable {
    public var id: String
    public var grantID: String
    /// The proof key as `SecretSealer.seal` left it, for this session id.
    public var sealedProofKey: Data
    public var expiresAt: Int64
}

public struct StoredToken: Sendable, Equatable {
    public var jti: String
    public var grantID: String
    public var sessionID: String
    public var issuedAt: Int64
    public var expiresAt: Int64
    public var revokedAt: Int64?

    public init(jti: String, grantID: String, sessionID: String, issuedAt: Int64, expiresAt: Int64, revokedAt: Int64? = nil) {
        self.jti = jti
        self.grantID = grantID
        self.sessionID = sessionID
        self.issuedAt = issuedAt
        self.expiresAt = expiresAt
        self.revokedAt = revokedAt
    }
}
