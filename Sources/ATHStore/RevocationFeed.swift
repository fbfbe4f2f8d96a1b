import ATHCore
import Foundation

/// What was revoked, as every instance must learn it: a server caches what it checked (a
/// session's grant, a token's standing) and drops the entry when told.
public enum Revocation: Sendable, Equatable, Codable {
    /// Grants ended, with every token of them.
    case grants([String])
    /// One access token of the handshake's, with the session it belongs to.
    case token(jti: String, session: String)
    /// One v0.1 access token, by digest.
    case issuedToken(digest: String)
    /// Every token of a v0.1 client (its registration ended).
    case registration(clientID: String)
}

/// Revocations committed by any instance, pushed as they commit: what a store shared by several
/// instances offers, so that none waits for its cache to expire. A store of one instance
/// (SQLite) does not offer this; the instance that revokes drops its own caches.
public protocol RevocationFeed: Sendable {
    /// A stream of every revocation committed from now on (this instance's included), for as
    /// long as the stream is consumed; the store reconnects by itself when its connection drops.
    func revocations() -> AsyncStream<Revocation>
}

/// Handshakes changed by any instance in a way that ends an agent's wait for the user's answer
/// (confirmed, completed, failed), pushed as they commit: the instance holding the agent's long
/// poll answers it at once rather than at its next look at the store.
public protocol HandshakeChangeFeed: Sendable {
    /// The id of every such handshake committed from now on, for as long as the stream is consumed.
    func handshakeChanges() -> AsyncStream<String>
}
