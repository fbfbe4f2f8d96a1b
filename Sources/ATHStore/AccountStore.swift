import ATHCore
import Foundation

/// Accounts (Act Auth): one internal id each, never leaving the store; external ids; aliases;
/// public keys; suspension and the account's type on this service.
public protocol AccountStore: Sendable {
    // One or more external ids (the account's DID first); unique aliases; public keys. Lookups
    // take any external id.
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
    func suspendAccount(did: String, now: Int64, audit: @escaping @Sendable (_ ended: [String]) -> [AuditEvent]) async throws -> [String]
    /// Sets (nil: clears) the account's type on this service and, in the same transaction,
    /// revokes (with their tokens) the grants in force of the account for which `ends(grant,
    /// asAgent)` holds; returns their ids. Read and revoked in one transaction, so a grant made
    /// while the type changes is either seen here or made under the new type.
    func setAccountType(
        did: String, to type: String?, now: Int64, ending ends: @escaping @Sendable (_ grant: Grant, _ asAgent: Bool) -> Bool,
        audit: @escaping @Sendable (_ ended: [String]) -> [AuditEvent]
    ) async throws -> [String]
    /// The grants in force in which the account with external id `did` (under any of its
    /// external ids, or `did` itself when no account has it) is the agent or the user, oldest first.
    func activeGrants(did: String, now: Int64) async throws -> [Grant]
    /// Lifts a suspension; the grants it ended stay revoked.
    func reinstateAccount(did: String, audit: [AuditEvent]) async throws
    /// False for an id no account has.
    func isSuspended(did: String) async throws -> Bool
}

extension AccountStore {
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
}
