/// What the server knows of one pre-authorization credential a user issued: it learns of a
/// credential when an agent presents it (step 5), and the user can see and revoke it through the
/// user API (`GET /ath/credentials`, `POST /ath/credentials/{jti}/revoke`).
public struct CredentialUse: Codable, Sendable, Equatable {
    /// The credential's `jti`.
    public var jti: String
    /// The agent it was issued to.
    public var client_did: String
    /// When a grant was first made with it (Unix seconds).
    public var first_used_at: Int64
    /// Grants made with it, and how many of them are still in force.
    public var grants: Int
    public var active_grants: Int
    /// Set once the user revoked it: no handshake accepts it from then on.
    public var revoked_at: Int64?

    public init(jti: String, client_did: String, first_used_at: Int64, grants: Int, active_grants: Int, revoked_at: Int64?) {
        self.jti = jti
        self.client_did = client_did
        self.first_used_at = first_used_at
        self.grants = grants
        self.active_grants = active_grants
        self.revoked_at = revoked_at
    }
}
