import ATHCore
import Foundation

/// Grants, their sessions and tokens, and the users' pre-authorization credentials they were
/// made with.
public protocol GrantStore: Sendable {
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
    func revokeCredential(jti: String, userDID: String, now: Int64, audit: @escaping @Sendable (_ ended: [String]) -> [AuditEvent]) async throws
        -> [String]
    func isCredentialRevoked(jti: String, userDID: String) async throws -> Bool
    /// The credentials of `userDID` that made grants or were revoked, newest first.
    func credentials(userDID: String, now: Int64) async throws -> [CredentialUse]
    /// Revokes one token; nil (nothing written) when no token has this id. The audit records are
    /// built from the token found.
    func revokeToken(jti: String, now: Int64, audit: @escaping @Sendable (StoredToken) -> [AuditEvent]) async throws -> StoredToken?
}
