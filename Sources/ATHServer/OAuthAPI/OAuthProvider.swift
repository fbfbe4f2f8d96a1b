import ATHCore
import Foundation

/// A service the v0.1 API puts behind `/ath/proxy/{provider_id}/...`: where its users consent
/// (a real OAuth 2.0 / OIDC provider), what it offers, and which of its operations each scope
/// reaches.
public struct OAuthProvider: Sendable {
    public var id: String
    public var displayName: String
    /// Scope names with the plain words a user reads when asked to consent.
    public var scopes: [(name: String, description: String)]
    public var categories: [String]
    public var authorizationEndpoint: String
    public var tokenEndpoint: String
    public var clientID: String
    public var clientSecret: String
    /// How the gateway authenticates at the token endpoint: in the form body (what most
    /// providers and the official mock take) or by HTTP Basic.
    public var clientAuthentication: ClientAuthentication
    /// Where proxied requests go: `<upstream><path>?<query>`.
    public var upstream: Upstream
    public var operations: OperationMap

    public enum ClientAuthentication: String, Sendable { case post = "client_secret_post", basic = "client_secret_basic" }

    public init(
        id: String, displayName: String, scopes: [(name: String, description: String)], categories: [String] = [],
        authorizationEndpoint: String, tokenEndpoint: String, clientID: String, clientSecret: String,
        clientAuthentication: ClientAuthentication = .post, upstream: Upstream, operations: OperationMap
    ) {
        self.id = id
        self.displayName = displayName
        self.scopes = scopes
        self.categories = categories
        self.authorizationEndpoint = authorizationEndpoint
        self.tokenEndpoint = tokenEndpoint
        self.clientID = clientID
        self.clientSecret = clientSecret
        self.clientAuthentication = clientAuthentication
        self.upstream = upstream
        self.operations = operations
    }

    public var scopeNames: [String] { scopes.map(\.name) }
}
