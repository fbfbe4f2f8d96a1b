import ATHCore
import Foundation

/// Everything a server must remember across requests, restarts and instances: one protocol
/// per aggregate (accounts, single-use values, handshakes, grants and their tokens, the audit
/// log), so that each can be built, tested and later placed on the backend that suits it.
/// SQLite (`ATHStoreSQLite`) is the default; PostgreSQL (`ATHStorePostgres`) serves several
/// instances.
///
/// Contract: each method is one transaction, with the audit records of the change inside it.
/// `updateHandshake` writes the handshake, its grant, session and token together, so a failure
/// leaves no half-made grant.
public protocol ATHStore: AccountStore, SingleUseValues, HandshakeStore, GrantStore, AuditLog {}

public struct StoredHandshake: Sendable {
    public var handshake: ServerHandshake
    public var revision: Int

    public init(handshake: ServerHandshake, revision: Int) {
        (self.handshake, self.revision) = (handshake, revision)
    }
}

public struct StoredSession: Sendable {
    public var id: String
    public var grantID: String
    /// The proof key as `SecretSealer.seal` left it, for this session id.
    public var sealedProofKey: Data
    public var expiresAt: Int64

    public init(id: String, grantID: String, sealedProofKey: Data, expiresAt: Int64) {
        (self.id, self.grantID, self.sealedProofKey, self.expiresAt) = (id, grantID, sealedProofKey, expiresAt)
    }
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
