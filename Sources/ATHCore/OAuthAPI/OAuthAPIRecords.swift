import Foundation

/// An agent registered through `POST /ath/agents/register`: its OAuth client, what the server
/// approved for it, where its users may be sent back. The client secret is kept as its digest.
public struct AgentRegistration: Codable, Sendable, Equatable {
    public var clientID: String
    public var secretDigest: String
    public var agentID: String
    public var developer: Developer
    public var purpose: String?
    public var redirectURIs: [String]
    public var status: Status
    public var providers: [ProviderApproval]
    public var createdAt: Int64
    public var approvalExpiresAt: Int64

    public enum Status: String, Codable, Sendable { case approved, pending, denied }

    public struct Developer: Codable, Sendable, Equatable {
        public var name: String
        public var id: String
        public var contact: String?

        public init(name: String, id: String, contact: String? = nil) {
            (self.name, self.id, self.contact) = (name, id, contact)
        }
    }

    public struct ProviderApproval: Codable, Sendable, Equatable {
        public var providerID: String
        public var approvedScopes: [String]
        public var deniedScopes: [String]
        public var denialReason: String?

        public init(providerID: String, approvedScopes: [String], deniedScopes: [String], denialReason: String? = nil) {
            (self.providerID, self.approvedScopes, self.deniedScopes, self.denialReason) = (providerID, approvedScopes, deniedScopes, denialReason)
        }
    }

    public init(
        clientID: String, secretDigest: String, agentID: String, developer: Developer, purpose: String?, redirectURIs: [String],
        status: Status, providers: [ProviderApproval], createdAt: Int64, approvalExpiresAt: Int64
    ) {
        self.clientID = clientID
        self.secretDigest = secretDigest
        self.agentID = agentID
        self.developer = developer
        self.purpose = purpose
        self.redirectURIs = redirectURIs
        self.status = status
        self.providers = providers
        self.createdAt = createdAt
        self.approvalExpiresAt = approvalExpiresAt
    }

    public func approval(of providerID: String) -> ProviderApproval? { providers.first { $0.providerID == providerID } }
}

/// One user authorization through `POST /ath/authorize` → the provider → `GET /ath/callback` →
/// `POST /ath/token`: single use, short-lived, bound to the client, provider, scopes, PKCE
/// verifier and the redirect it was asked with.
public struct AuthorizationSession: Codable, Sendable, Equatable {
    /// `ath_session_id`, what the agent holds.
    public var id: String
    /// The `state` sent to the provider, what the callback finds the session by (never the agent's).
    public var providerState: String
    public var clientID: String
    public var agentID: String
    public var providerID: String
    public var requestedScopes: [String]
    public var codeVerifier: String
    public var userRedirectURI: String
    public var resource: String?
    public var createdAt: Int64
    public var expiresAt: Int64
    public var status: Status
    /// What the provider reported the user consented to (after the callback).
    public var consentedScopes: [String]?
    /// The provider's error when the user refused (`status == .denied`).
    public var denial: String?
    /// The provider's subject for the user, when it tells (an OIDC `sub`).
    public var userID: String?
    /// The digest of the one-time code the callback hands to the agent's redirect URI, which
    /// `POST /ath/token` must present (but in dev mode: docs/GATEWAY.md).
    public var codeDigest: String?
    /// The digest of the secret the consent page left in the user's browser (a cookie), which
    /// the provider's callback must bring back: the session is bound to that browser. nil until
    /// the user continues from the consent page (and always in dev mode).
    public var bindingDigest: String?

    public enum Status: String, Codable, Sendable {
        /// Waiting for the user at the provider.
        case pending
        /// The provider's code was exchanged: ready for `POST /ath/token`.
        case completed
        case denied
        /// A token was issued from it: it can never be used again.
        case redeemed
    }

    public init(
        id: String, providerState: String, clientID: String, agentID: String, providerID: String, requestedScopes: [String],
        codeVerifier: String, userRedirectURI: String, resource: String?, createdAt: Int64, expiresAt: Int64
    ) {
        self.id = id
        self.providerState = providerState
        self.clientID = clientID
        self.agentID = agentID
        self.providerID = providerID
        self.requestedScopes = requestedScopes
        self.codeVerifier = codeVerifier
        self.userRedirectURI = userRedirectURI
        self.resource = resource
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.status = .pending
    }
}

/// The provider's tokens for one completed authorization, sealed (`SecretSealer`, bound to the
/// session id) before they reach the store: they never leave the gateway, and a copy of the
/// database alone does not yield them.
public struct ProviderGrant: Codable, Sendable, Equatable {
    public var accessToken: String
    public var refreshToken: String?
    /// Unix seconds; nil when the provider gave no lifetime.
    public var expiresAt: Int64?

    public init(accessToken: String, refreshToken: String? = nil, expiresAt: Int64? = nil) {
        (self.accessToken, self.refreshToken, self.expiresAt) = (accessToken, refreshToken, expiresAt)
    }
}

/// An access token of the v0.1 API: opaque to the agent, stored as its digest, bound to
/// (agent, user, provider, scopes).
public struct IssuedAccessToken: Codable, Sendable, Equatable {
    public var digest: String
    public var clientID: String
    public var agentID: String
    /// Who consented: the provider's subject when it tells, else the authorization session.
    public var userID: String
    public var providerID: String
    public var scopes: [String]
    /// The authorization session it came from, whose sealed provider grant it uses.
    public var sessionID: String
    public var issuedAt: Int64
    public var expiresAt: Int64
    public var revokedAt: Int64?

    public init(
        digest: String, clientID: String, agentID: String, userID: String, providerID: String, scopes: [String], sessionID: String,
        issuedAt: Int64, expiresAt: Int64, revokedAt: Int64? = nil
    ) {
        self.digest = digest
        self.clientID = clientID
        self.agentID = agentID
        self.userID = userID
        self.providerID = providerID
        self.scopes = scopes
        self.sessionID = sessionID
        self.issuedAt = issuedAt
        self.expiresAt = expiresAt
        self.revokedAt = revokedAt
    }
}
