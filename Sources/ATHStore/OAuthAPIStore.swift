import ATHCore
import Foundation

/// What the v0.1 HTTP API must remember across requests, restarts and instances: registrations,
/// authorization sessions, issued tokens. Each method is one transaction with its audit records,
/// as in `ATHStore`; the state changes are check-and-set, so two instances racing on one
/// session or one token cannot both win.
public protocol OAuthAPIStore: Sendable {
    /// `StoreError.duplicate` (nothing written) when the agent id has a registration already.
    func register(_ registration: AgentRegistration, audit: [AuditEvent]) async throws
    func registration(clientID: String) async throws -> AgentRegistration?

    func beginAuthorization(_ session: AuthorizationSession, audit: [AuditEvent]) async throws
    func authorizationSession(id: String) async throws -> AuthorizationSession?
    func authorizationSession(providerState: String) async throws -> AuthorizationSession?
    /// Records the browser binding of a pending, unexpired session that has none yet; false,
    /// nothing written, otherwise: the first browser to continue from the consent page holds it.
    func bindAuthorization(id: String, bindingDigest: String, now: Int64, audit: [AuditEvent]) async throws -> Bool
    /// Moves a pending, unexpired session to `completed` (with the consented scopes, the user and
    /// the sealed provider grant) or to `denied`; false, nothing written, when it was not
    /// pending any more or has expired: one callback per session.
    func finishAuthorization(_ finished: AuthorizationSession, sealedGrant: Data?, now: Int64, audit: [AuditEvent]) async throws -> Bool
    /// Marks a completed, unexpired session redeemed and records `token` issued from it; false,
    /// nothing written, when it was not completed any more: one token per session.
    func redeemAuthorization(id: String, issuing token: IssuedAccessToken, now: Int64, audit: [AuditEvent]) async throws -> Bool
    /// The token with its session's sealed provider grant (nil when the session is gone), in
    /// one read: what the proxy needs to admit a request.
    func issuedTokenAndGrant(digest: String) async throws -> (token: IssuedAccessToken, sealedGrant: Data?)?
    /// Whether the token is active, revoked, or gone (purged): what the proxy re-reads of a
    /// token it remembers.
    func issuedTokenRevocation(digest: String) async throws -> TokenStanding
    /// Revokes the token if `clientID` (nil: any, for an administrator) issued it; returns it as
    /// found, nil when there is no such token of that client (nothing written either way then).
    func revokeIssuedToken(digest: String, clientID: String?, now: Int64, audit: @escaping @Sendable (IssuedAccessToken) -> [AuditEvent]) async throws
        -> IssuedAccessToken?
    /// Ends an agent's registration (an operator's decision): the registration becomes `denied`,
    /// its unfinished sessions `denied`, and every token it holds revoked, in one transaction
    /// with `audit`. Returns the digests of the tokens it revoked, nil (nothing written) when
    /// no agent is registered with `clientID`.
    func revokeRegistration(clientID: String, now: Int64, audit: [AuditEvent]) async throws -> [String]?
    /// Deletes sessions that expired before `before` without being redeemed, and tokens expired
    /// before it with their redeemed sessions; returns how many sessions and tokens.
    func purgeAuthorizations(expiredBefore before: Int64) async throws -> (sessions: Int, tokens: Int)
}

/// A remembered token's standing in the store.
public enum TokenStanding: Sendable, Equatable {
    case active
    case revoked
    case gone
}
