import ATHCore
import ATHStore
import AsyncHTTPClient
import Foundation

/// The v0.1 HTTP API's use cases (ath-http-api-v0.1.md, docs/GATEWAY.md), one store transaction
/// each with its audit records: registration, authorization through the provider, the token,
/// the proxy's admission, revocation. HTTP stays in `OAuthAPIRoutes`.
///
/// Strict by default; `Configuration.devMode` relaxes only what the official test suite needs
/// (the attestation's signature, which its agents cannot make verifiable, and the comparison of
/// the authorization code at `/ath/token`). Every other check stays on in both modes.
public struct OAuthAPIService: Sendable {
    public struct Configuration: Sendable {
        /// The gateway's public base URL, byte for byte: `gateway_id`, the attestations' `aud`
        /// and the prefix of the provider's `redirect_uri`.
        public var publicURL: String
        public var providers: [OAuthProvider]
        public var devMode = false
        public var sessionLifetime: Int64 = 600
        public var tokenLifetime: Int64 = 3600
        /// How long a registration's approval lasts (`approval_expires`).
        public var approvalLifetime: Int64 = 365 * 86_400
        public var attestation = AgentAttestation.Policy()
        /// Each agent's calls (registration, authorization, tokens, proxied requests, revocation),
        /// over a sliding window; nil: none. The official suite makes some 25 calls a second, each
        /// test with a new agent.
        public var agentRateLimit: RateLimit? = try? RateLimit(parsing: "600/minute")
        /// How long (seconds) the proxy admits a token it remembers before reading its standing
        /// in the store again: how late a revocation made through another instance takes effect
        /// here. 0: every proxied request reads the store.
        public var revocationRecheck: Int64 = 1
        /// The provider a native-mode agent (`ATHNativeClient`) reaches through
        /// `/.well-known/ath-app.json`: its id is the document's `app_id` and its proxy prefix the
        /// `api_base`. nil: no such document (the gateway speaks to gateway-mode agents only).
        public var nativeApp: String?

        public init(publicURL: String, providers: [OAuthProvider]) {
            self.publicURL = publicURL.hasSuffix("/") ? String(publicURL.dropLast()) : publicURL
            self.providers = providers
        }

        public var callbackURL: String { publicURL + "/ath/callback" }
        /// The consent page of one authorization session, what `authorization_url` names.
        func consentURL(_ sessionID: String) -> String { publicURL + "/ath/consent/" + sessionID }
        public var tokenURL: String { publicURL + "/ath/token" }
        func provider(_ id: String) -> OAuthProvider? { providers.first { $0.id == id } }
    }

    public private(set) var configuration: Configuration
    let store: any ATHStore & OAuthAPIStore
    let sealer: SecretSealer
    let documents: AgentIdentityDocuments
    let exchange: ProviderCodeExchange
    let clock: @Sendable () -> Date
    /// Each agent's calls: in this process, or shared by every instance when the store is.
    let limiter: any RateLimiting
    private(set) var admitted: AdmittedTokens

    public init(
        _ configuration: Configuration, store: any ATHStore & OAuthAPIStore, sealer: SecretSealer, httpClient: HTTPClient,
        documents: AgentIdentityDocuments = AgentIdentityDocuments(), limiter: (any RateLimiting)? = nil,
        clock: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.configuration = configuration
        self.store = store
        self.sealer = sealer
        self.documents = documents
        self.exchange = ProviderCodeExchange(http: httpClient)
        self.clock = clock
        self.admitted = AdmittedTokens(recheckInterval: configuration.revocationRecheck, feed: store as? any RevocationFeed)
        // A server's own limiter when given (`ATHService.limiter`): one batcher syncs every count.
        self.limiter = limiter ?? (store as? any SharedRateCounters).map { SharedRateLimiter(store: $0) } ?? SlidingWindowLimiter()
    }

    /// The same service with a new configuration (a gateway's reload): the rate counters and,
    /// unless the recheck interval changed, the admitted tokens carry over, so a reload neither
    /// resets an agent's rate nor makes every token be read again.
    public func reconfigured(_ configuration: Configuration) -> OAuthAPIService {
        var copy = self
        copy.configuration = configuration
        if configuration.revocationRecheck != self.configuration.revocationRecheck {
            copy.admitted = AdmittedTokens(recheckInterval: configuration.revocationRecheck, feed: store as? any RevocationFeed)
        }
        return copy
    }

    // MARK: Discovery

    public struct Discovery: Encodable, Sendable {
        var ath_version = "0.1"
        var gateway_id: String
        var agent_registration_endpoint: String
        var supported_providers: [Provider]

        struct Provider: Encodable {
            var provider_id: String
            var display_name: String
            var available_scopes: [String]
            var scope_descriptions: [String: String]
            var auth_mode = "OAUTH2"
            var agent_approval_required = false
            var categories: [String]
        }
    }

    public var discovery: Discovery {
        Discovery(
            gateway_id: configuration.publicURL, agent_registration_endpoint: configuration.publicURL + "/ath/agents/register",
            supported_providers: configuration.providers.map {
                .init(
                    provider_id: $0.id, display_name: $0.displayName, available_scopes: $0.scopeNames,
                    scope_descriptions: Dictionary($0.scopes.map { ($0.name, $0.description) }, uniquingKeysWith: { a, _ in a }),
                    categories: $0.categories)
            })
    }

    /// `/.well-known/ath-app.json`, the native-mode discovery document (ath-v0.1-sdk-contract.md
    /// §8). The native client calls the same register, authorize, token and revoke endpoints with
    /// `aud` = the public URL, authorizes with `provider_id` = `app_id`, and sends its API calls
    /// to `api_base`: here the provider's proxy prefix, so that every call goes through `admit`.
    public struct NativeAppDocument: Encodable, Sendable {
        var ath_version = "0.1"
        var app_id: String
        var name: String
        var api_base: String
        var auth: Auth

        struct Auth: Encodable {
            var type = "oauth2"
            var authorization_endpoint: String
            var token_endpoint: String
            var registration_endpoint: String
            var scopes_supported: [String]
            var agent_attestation_required: Bool
        }
    }

    /// nil when no native app is configured.
    public var nativeAppDocument: NativeAppDocument? {
        guard let id = configuration.nativeApp, let provider = configuration.provider(id) else { return nil }
        let base = configuration.publicURL
        return NativeAppDocument(
            app_id: provider.id, name: provider.displayName, api_base: base + "/ath/proxy/" + provider.id,
            auth: .init(
                authorization_endpoint: base + "/ath/authorize", token_endpoint: configuration.tokenURL,
                registration_endpoint: base + "/ath/agents/register", scopes_supported: provider.scopeNames,
                agent_attestation_required: !configuration.devMode))
    }

    // MARK: Registration

    struct RegisterRequest: Decodable {
        var agent_id: String
        var agent_attestation: String
        var developer: AgentRegistration.Developer
        var requested_providers: [RequestedProvider]
        var purpose: String?
        var redirect_uris: [String]?

        struct RequestedProvider: Decodable {
            var provider_id: String
            var scopes: [String]
        }
    }

    public struct Registered: Encodable, Sendable {
        var client_id: String
        var client_secret: String?
        var agent_id: String
        var agent_status: String
        var approved_providers: [Approval]
        var approval_expires: String
        var redirect_uris: [String]

        struct Approval: Encodable {
            var provider_id: String
            var approved_scopes: [String]
            var denied_scopes: [String]
            var denial_reason: String?
        }

        init(_ r: AgentRegistration, secret: String?) {
            client_id = r.clientID
            client_secret = secret
            agent_id = r.agentID
            agent_status = r.status.rawValue
            approved_providers = r.providers.map {
                Approval(provider_id: $0.providerID, approved_scopes: $0.approvedScopes, denied_scopes: $0.deniedScopes, denial_reason: $0.denialReason)
            }
            approval_expires = Date(timeIntervalSince1970: TimeInterval(r.approvalExpiresAt)).formatted(.iso8601)
            redirect_uris = r.redirectURIs
        }
    }

    /// `POST /ath/agents/register`: approval is automatic, the requested scopes each provider
    /// offers; the secret is shown once and stored as its digest.
    public func register(_ body: JSONValue) async throws -> Registered {
        let request = try body.decode(RegisterRequest.self)
        let now = clock()
        guard request.agent_id.utf8.count <= 2048, URL(string: request.agent_id)?.scheme != nil else {
            throw ATHError(.malformedMessage, "agent_id must be an absolute URI")
        }
        guard (1...16).contains(request.requested_providers.count) else {
            throw ATHError(.malformedMessage, "requested_providers must hold 1 to 16 entries")
        }
        let redirects = request.redirect_uris ?? []
        guard redirects.count <= 10 else { throw ATHError(.malformedMessage, "at most 10 redirect_uris") }
        for uri in redirects { try Self.checkRedirectURI(uri) }
        let attestation = try await attest(request.agent_attestation, audience: configuration.publicURL, now: now)
        guard attestation.agentID == request.agent_id else {
            throw ATHError(.invalidAttestation, "the attestation's sub is not agent_id \(request.agent_id.prefix(256))")
        }
        try await limit(request.agent_id, now: now)
        let approvals = request.requested_providers.map { asked -> AgentRegistration.ProviderApproval in
            guard let provider = configuration.provider(asked.provider_id) else {
                return .init(providerID: asked.provider_id, approvedScopes: [], deniedScopes: asked.scopes, denialReason: "provider not offered")
            }
            let offered = Set(provider.scopeNames)
            let denied = asked.scopes.filter { !offered.contains($0) }
            return .init(
                providerID: asked.provider_id, approvedScopes: asked.scopes.filter(offered.contains), deniedScopes: denied,
                denialReason: denied.isEmpty ? nil : "scopes not offered")
        }
        let t = Freshness.unix(now)
        let secret = OpaqueSecret.generate(prefix: "ath_cs_")
        let registration = AgentRegistration(
            clientID: "ath_client_" + Nonce.generate(bytes: 16), secretDigest: OpaqueSecret.digest(secret), agentID: request.agent_id,
            developer: request.developer, purpose: request.purpose, redirectURIs: redirects,
            status: approvals.contains { !$0.approvedScopes.isEmpty } ? .approved : .denied, providers: approvals, createdAt: t,
            approvalExpiresAt: t + configuration.approvalLifetime)
        do {
            try await store.register(
                registration,
                audit: [
                    AuditEvent(
                        at: t, event: "oauth.agent.registered", actor: request.agent_id, subject: registration.clientID,
                        outcome: registration.status.rawValue,
                        detail: approvals.map { "\($0.providerID): \($0.approvedScopes.joined(separator: " "))" }.joined(separator: "; "))
                ])
        } catch StoreError.duplicate {
            throw ATHError(.agentAlreadyRegistered, "agent \(request.agent_id.prefix(256)) is already registered")
        }
        return Registered(registration, secret: secret)
    }

    /// `GET /ath/agents/{client_id}`: the registration, to its own client only.
    public func registration(clientID: String, authenticatedAs caller: String, secret: String) async throws -> Registered {
        let registration = try await client(caller, secret: secret)
        guard ConstantTime.equal(registration.clientID, clientID) else {
            throw ATHError(.agentIdentityMismatch, "a client may read its own registration only")
        }
        return Registered(registration, secret: nil)
    }

    // MARK: Authorization

    struct AuthorizeRequest: Decodable {
        var client_id: String?
        var agent_attestation: String
        var provider_id: String
        var scopes: [String]
        var state: String?
        var user_redirect_uri: String?
        var resource: String?
    }

    public struct Authorization: Encodable, Sendable {
        var authorization_url: String
        var ath_session_id: String
    }

    /// `POST /ath/authorize`: checks in the reference's order, then a single-use session bound to
    /// the client, provider, scopes, PKCE verifier and redirect, and the provider's URL for the user.
    public func authorize(_ body: JSONValue) async throws -> Authorization {
        let request = try body.decode(AuthorizeRequest.self)
        let now = clock()
        guard let clientID = request.client_id, !clientID.isEmpty else { throw ATHError(.malformedMessage, "client_id is required") }
        guard let state = request.state?.utf8.count, (22...512).contains(state) else {
            throw ATHError(.stateMismatch, "state is required: at least 128 random bits (22 or more characters)")
        }
        guard let registration = try await store.registration(clientID: clientID) else {
            throw ATHError(.agentNotRegistered, "no agent is registered with this client_id")
        }
        try await limit(registration.agentID, now: now)
        try checkApproved(registration, now: now)
        let redirect: String
        if let asked = request.user_redirect_uri {
            guard registration.redirectURIs.contains(asked) else {
                throw ATHError(.redirectURIMismatch, "user_redirect_uri is not one of the registered redirect_uris")
            }
            redirect = asked
        } else {
            guard registration.redirectURIs.count == 1 else {
                throw ATHError(.redirectURIMismatch, "user_redirect_uri is required (exactly one registered redirect_uri names it otherwise)")
            }
            redirect = registration.redirectURIs[0]
        }
        let attestation = try await attest(request.agent_attestation, audience: configuration.publicURL, now: now)
        guard attestation.agentID == registration.agentID else {
            throw ATHError(.agentIdentityMismatch, "the attestation's sub is not this client's agent")
        }
        guard let approval = registration.approval(of: request.provider_id), !approval.approvedScopes.isEmpty,
            let provider = configuration.provider(request.provider_id)
        else { throw ATHError(.providerNotApproved, "provider \(request.provider_id.prefix(64)) is not approved for this agent") }
        guard (1...64).contains(request.scopes.count) else { throw ATHError(.malformedMessage, "scopes must hold 1 to 64 names") }
        let notApproved = request.scopes.filter { !approval.approvedScopes.contains($0) }
        guard notApproved.isEmpty else {
            throw ATHError(.scopeNotApproved, "not approved for this agent: \(notApproved.prefix(8).joined(separator: ", ").prefix(256))")
        }
        if let resource = request.resource { guard URL(string: resource)?.scheme != nil, resource.utf8.count <= 2048 else {
            throw ATHError(.malformedMessage, "resource must be an absolute URI (RFC 8707)")
        } }
        let t = Freshness.unix(now)
        let session = AuthorizationSession(
            id: "ath_sess_" + Nonce.generate(bytes: 24), providerState: Nonce.generate(bytes: 32), clientID: clientID,
            agentID: registration.agentID, providerID: provider.id, requestedScopes: request.scopes, codeVerifier: PKCE.verifier(),
            userRedirectURI: redirect, resource: request.resource, createdAt: t, expiresAt: t + configuration.sessionLifetime)
        try await store.beginAuthorization(
            session,
            audit: [
                AuditEvent(
                    at: t, event: "oauth.authorization.started", actor: registration.agentID, subject: session.id, outcome: "pending",
                    detail: "\(provider.id): \(request.scopes.joined(separator: " "))")
            ])
        // Strict: the user first sees the gateway's consent page, which binds the session to
        // the browser. Dev mode: straight to the provider (the official suite has no browser).
        let url = configuration.devMode ? providerAuthorizationURL(session, provider) : configuration.consentURL(session.id)
        return Authorization(authorization_url: url, ath_session_id: session.id)
    }

    /// Where the user's browser asks the provider for consent: PKCE S256 (the verifier stays
    /// here), the session's provider-side `state`, the gateway's callback.
    func providerAuthorizationURL(_ session: AuthorizationSession, _ provider: OAuthProvider) -> String {
        var query = [
            ("response_type", "code"), ("client_id", provider.clientID), ("redirect_uri", configuration.callbackURL),
            ("scope", session.requestedScopes.joined(separator: " ")), ("state", session.providerState),
            ("code_challenge", PKCE.challenge(for: session.codeVerifier)), ("code_challenge_method", PKCE.method),
        ]
        if let resource = session.resource { query.append(("resource", resource)) }
        return Self.appending(query, to: provider.authorizationEndpoint)
    }

    // MARK: Consent

    /// What the consent page shows the user: who asks, for which provider and scopes.
    public struct ConsentRequest: Sendable {
        public var sessionID: String
        public var agentID: String
        public var developer: String
        public var purpose: String?
        public var provider: String
        public var scopes: [(name: String, description: String)]
        public var expiresAt: Int64
    }

    /// `GET /ath/consent/{session}`: a pending session that no browser has continued yet.
    public func consentRequest(sessionID: String) async throws -> ConsentRequest {
        let (session, provider) = try await unboundSession(sessionID, now: Freshness.unix(clock()))
        let registration = try await store.registration(clientID: session.clientID)
        let described = Dictionary(provider.scopes.map { ($0.name, $0.description) }, uniquingKeysWith: { a, _ in a })
        return ConsentRequest(
            sessionID: session.id, agentID: session.agentID, developer: registration?.developer.name ?? "unknown", purpose: registration?.purpose,
            provider: provider.displayName, scopes: session.requestedScopes.map { ($0, described[$0] ?? $0) }, expiresAt: session.expiresAt)
    }

    /// The user's answer on the consent page, from the browser holding `binding` (the page's
    /// cookie). Continue: the session is bound to that browser (the first to continue holds it)
    /// and the answer is the provider's authorization URL. Deny: the session ends denied and the
    /// answer is the agent's redirect with `error=access_denied`.
    public func consent(sessionID: String, approve: Bool, binding: String) async throws -> String {
        let t = Freshness.unix(clock())
        var (session, provider) = try await unboundSession(sessionID, now: t)
        guard approve else {
            session.status = .denied
            session.denial = "access_denied"
            guard try await store.finishAuthorization(session, sealedGrant: nil, now: t, audit: [
                AuditEvent(
                    at: t, event: "oauth.authorization.denied", actor: session.agentID, subject: session.id, outcome: "denied",
                    detail: "at the consent page")
            ]) else { throw ATHError(.sessionNotFound, "this authorization session has already finished") }
            return Self.appending([("error", "access_denied"), ("ath_session_id", session.id)], to: session.userRedirectURI)
        }
        guard try await store.bindAuthorization(id: session.id, bindingDigest: OpaqueSecret.digest(binding), now: t, audit: [
            AuditEvent(at: t, event: "oauth.authorization.continued", actor: session.agentID, subject: session.id, outcome: "bound")
        ]) else { throw ATHError(.sessionNotFound, "this authorization was already continued in a browser, or has finished") }
        return providerAuthorizationURL(session, provider)
    }

    /// A pending, unexpired session not yet bound to a browser, with its provider.
    func unboundSession(_ id: String, now t: Int64) async throws -> (AuthorizationSession, OAuthProvider) {
        guard let session = try await store.authorizationSession(id: id) else {
            throw ATHError(.sessionNotFound, "no authorization session has this id")
        }
        let provider = try pending(session, now: t)
        guard session.bindingDigest == nil else {
            throw ATHError(.sessionNotFound, "this authorization was already continued in a browser")
        }
        return (session, provider)
    }

    /// The provider of a session still waiting for the user: unexpired, pending, its provider
    /// still configured.
    func pending(_ session: AuthorizationSession, now t: Int64) throws -> OAuthProvider {
        guard session.expiresAt > t else { throw ATHError(.sessionExpired, "the authorization session expired") }
        guard session.status == .pending else { throw ATHError(.sessionNotFound, "this authorization session has already finished") }
        guard let provider = configuration.provider(session.providerID) else {
            throw ATHError(.providerNotApproved, "provider \(session.providerID) is no longer configured")
        }
        return provider
    }

    /// `GET /ath/callback`: the provider's answer for one session. Returns where to send the
    /// user's browser: the agent's redirect with `session_id`, `success=true` and (strict mode)
    /// the one-time code `/ath/token` wants, or with the provider's `error`.
    ///
    /// `browserBinding` gives the binding cookie the browser sent for a session id: outside dev
    /// mode it must be the one the consent page set (STATE_MISMATCH otherwise), so a callback
    /// carried to another browser, or forced on one that never saw the consent page, fails.
    public func callback(query: [String: String], browserBinding: (String) -> String?) async throws -> String {
        let now = clock()
        let t = Freshness.unix(now)
        guard let state = query["state"], var session = try await store.authorizationSession(providerState: state) else {
            throw ATHError(.stateMismatch, "no authorization is waiting for this state")
        }
        let provider = try pending(session, now: t)
        if !configuration.devMode {
            guard let digest = session.bindingDigest, let binding = browserBinding(session.id), OpaqueSecret.matches(binding, digest: digest) else {
                throw ATHError(.stateMismatch, "this browser did not continue from the consent page for this authorization")
            }
        }
        if let error = query["error"] {
            session.status = .denied
            session.denial = String(error.prefix(128))
            guard try await store.finishAuthorization(session, sealedGrant: nil, now: t, audit: [
                AuditEvent(at: t, event: "oauth.authorization.denied", actor: session.agentID, subject: session.id, outcome: "denied", detail: session.denial ?? "")
            ]) else { throw ATHError(.sessionNotFound, "this authorization session has already finished") }
            return Self.appending([("error", session.denial ?? "access_denied"), ("ath_session_id", session.id)], to: session.userRedirectURI)
        }
        guard let code = query["code"], !code.isEmpty else { throw ATHError(.malformedMessage, "the provider sent neither code nor error") }
        let result = try await exchange.exchange(
            code: code, verifier: session.codeVerifier, redirectURI: configuration.callbackURL, provider: provider, now: now)
        session.status = .completed
        session.consentedScopes = result.scopes ?? session.requestedScopes
        let oneTimeCode = OpaqueSecret.generate(prefix: "ath_code_")
        session.codeDigest = OpaqueSecret.digest(oneTimeCode)
        let sealed = try sealer.seal(bytes: try CanonicalJSON.bytes(of: result.grant), for: "provider-grant:" + session.id)
        guard try await store.finishAuthorization(session, sealedGrant: sealed, now: t, audit: [
            AuditEvent(
                at: t, event: "oauth.authorization.completed", actor: session.agentID, subject: session.id, outcome: "completed",
                detail: "consented: \((session.consentedScopes ?? []).joined(separator: " "))")
        ]) else { throw ATHError(.sessionNotFound, "this authorization session has already finished") }
        return Self.appending([("session_id", session.id), ("success", "true"), ("code", oneTimeCode)], to: session.userRedirectURI)
    }

    // MARK: Token

    struct TokenRequest: Decodable {
        var grant_type: String
        var client_id: String
        var client_secret: String
        var agent_attestation: String
        var code: String?
        var ath_session_id: String
    }

    public struct Token: Encodable, Sendable {
        var access_token: String
        var token_type = "Bearer"
        var expires_in: Int64
        var effective_scopes: [String]
        var provider_id: String
        var agent_id: String
        var scope_intersection: ScopeIntersection
    }

    /// `POST /ath/token`: the completed session redeemed, once, for a token carrying requested ∩
    /// approved ∩ consented scopes; none when that is empty.
    public func token(_ body: JSONValue) async throws -> Token {
        let request = try body.decode(TokenRequest.self)
        let now = clock()
        let t = Freshness.unix(now)
        guard request.grant_type == "authorization_code" else {
            throw ATHError(.malformedMessage, "grant_type must be authorization_code")
        }
        let registration = try await client(request.client_id, secret: request.client_secret)
        try checkApproved(registration, now: now)
        let attestation = try await attest(request.agent_attestation, audience: configuration.tokenURL, now: now)
        guard attestation.agentID == registration.agentID else {
            throw ATHError(.agentIdentityMismatch, "the attestation's sub is not this client's agent")
        }
        guard let session = try await store.authorizationSession(id: request.ath_session_id) else {
            throw ATHError(.sessionNotFound, "no authorization session has this ath_session_id")
        }
        guard ConstantTime.equal(session.clientID, registration.clientID) else {
            throw ATHError(.agentIdentityMismatch, "this authorization session belongs to another client")
        }
        guard session.expiresAt > t else { throw ATHError(.sessionExpired, "the authorization session expired") }
        switch session.status {
        case .denied: throw ATHError(.userDenied, "the user did not consent (\(session.denial ?? "access_denied"))")
        case .pending: throw ATHError(.sessionNotCompleted, "the user has not finished at the provider")
        case .redeemed: throw ATHError(.sessionNotCompleted, "a token was already issued for this authorization session")
        case .completed: break
        }
        if !configuration.devMode {
            guard let code = request.code, let digest = session.codeDigest, OpaqueSecret.matches(code, digest: digest) else {
                throw ATHError(.sessionNotCompleted, "code is not the one the callback gave this authorization session")
            }
        }
        let scopes = ScopeIntersection(
            requested: session.requestedScopes, agentApproved: registration.approval(of: session.providerID)?.approvedScopes ?? [],
            userConsented: session.consentedScopes ?? [])
        guard !scopes.effective.isEmpty else {
            throw ATHError(.scopeNotApproved, "no scope is approved for the agent, consented by the user and requested")
        }
        let secret = OpaqueSecret.generate(prefix: "ath_tk_")
        let issued = IssuedAccessToken(
            digest: OpaqueSecret.digest(secret), clientID: registration.clientID, agentID: registration.agentID,
            userID: session.userID ?? session.id, providerID: session.providerID, scopes: scopes.effective, sessionID: session.id,
            issuedAt: t, expiresAt: t + configuration.tokenLifetime)
        guard try await store.redeemAuthorization(id: session.id, issuing: issued, now: t, audit: [
            AuditEvent(
                at: t, event: "oauth.token.issued", actor: registration.agentID, subject: session.id, outcome: "issued",
                detail: "\(session.providerID): \(scopes.effective.joined(separator: " "))")
        ]) else { throw ATHError(.sessionNotCompleted, "a token was already issued for this authorization session") }
        return Token(
            access_token: secret, expires_in: configuration.tokenLifetime, effective_scopes: scopes.effective, provider_id: session.providerID,
            agent_id: registration.agentID, scope_intersection: scopes)
    }

    // MARK: Proxy

    public struct Admitted: Sendable {
        public var token: IssuedAccessToken
        public var provider: OAuthProvider
        public var grant: ProviderGrant
        /// The scope that admitted the operation.
        public var scope: String
    }

    /// The proxy's check, in the contract's order: the token (known, not revoked, not expired),
    /// `X-ATH-Agent-ID`, the provider (PROVIDER_MISMATCH before anything about the provider is
    /// looked up), the operation map, then the provider grant's own expiry. The token and its
    /// opened grant come from `AdmittedTokens` while fresh, else from the store: a revocation
    /// through this process holds at once, through another instance within
    /// `Configuration.revocationRecheck` seconds.
    public func admit(authorization: String?, agentHeader: String?, providerID: String, method: String, path: String) async throws -> Admitted {
        guard let authorization, authorization.count > 7, authorization.prefix(7).lowercased() == "bearer " else {
            throw ATHError(.tokenMissing, "Authorization: Bearer <access token> is required")
        }
        let now = clock()
        let t = Freshness.unix(now)
        let entry = try await admittedToken(OpaqueSecret.digest(String(authorization.dropFirst(7))), now: t)
        let token = entry.token
        guard token.expiresAt > t else { throw ATHError(.tokenExpired, "the access token expired") }
        guard let agentHeader, agentHeader == token.agentID else {
            throw ATHError(.agentIdentityMismatch, "X-ATH-Agent-ID must name the agent the token was issued to")
        }
        try await limit(token.agentID, now: now)
        guard providerID == token.providerID else {
            throw ATHError(.providerMismatch, "this token is for provider \(token.providerID), not \(providerID.prefix(64))")
        }
        guard let provider = configuration.provider(providerID) else {
            throw ATHError(.providerNotApproved, "provider \(providerID) is no longer configured")
        }
        let scope = try provider.operations.authorize(method: method, path: path, held: token.scopes)
        if let expiresAt = entry.grant.expiresAt, expiresAt <= t { throw ATHError(.tokenExpired, "the provider's token behind this access expired") }
        return Admitted(token: token, provider: provider, grant: entry.grant, scope: scope)
    }

    /// The token behind `digest` and its opened provider grant, standing (not revoked) as far as
    /// this process knows at `now`: remembered and fresh, remembered and confirmed by one read of
    /// its standing, or read whole from the store and opened.
    func admittedToken(_ digest: String, now t: Int64) async throws -> AdmittedTokens.Entry {
        if let entry = admitted.fresh(digest, now: t) { return entry }
        if var entry = admitted.remembered(digest) {
            switch try await store.issuedTokenRevocation(digest: digest) {
            case .active:
                entry.checkedAt = t
                admitted.remember(digest, entry)
                return entry
            case .revoked:
                admitted.forget(digest)
                throw ATHError(.tokenRevoked, "the access token was revoked")
            case .gone:
                admitted.forget(digest)
                throw ATHError(.tokenInvalid, "unknown access token")
            }
        }
        guard let (token, sealed) = try await store.issuedTokenAndGrant(digest: digest) else {
            throw ATHError(.tokenInvalid, "unknown access token")
        }
        if token.revokedAt != nil { throw ATHError(.tokenRevoked, "the access token was revoked") }
        guard let sealed, let opened = sealer.openBytes(sealed, for: "provider-grant:" + token.sessionID) else {
            throw ATHError(.tokenInvalid, "the provider grant behind this token is gone")
        }
        let entry = AdmittedTokens.Entry(token: token, grant: try JSONValue.parse(opened).decode(ProviderGrant.self), checkedAt: t)
        admitted.remember(digest, entry)
        return entry
    }

    // MARK: Revocation

    struct RevokeRequest: Decodable {
        var token: String
        var client_id: String?
        var client_secret: String?
    }

    /// `POST /ath/revoke` (RFC 7009): the client authenticates and revokes its own tokens; the
    /// answer is the same whether or not the token existed or was its own.
    public func revoke(_ body: JSONValue) async throws {
        let request = try body.decode(RevokeRequest.self)
        guard let clientID = request.client_id, let secret = request.client_secret else {
            throw ATHError(.invalidClient, "client_id and client_secret are required to revoke")
        }
        let registration = try await client(clientID, secret: secret)
        let t = Freshness.unix(clock())
        let digest = OpaqueSecret.digest(request.token)
        let revoked = try await store.revokeIssuedToken(digest: digest, clientID: registration.clientID, now: t) { token in
            [AuditEvent(at: t, event: "oauth.token.revoked", actor: token.agentID, subject: token.sessionID, outcome: "revoked")]
        }
        if revoked != nil { admitted.forget(digest) }
    }

    /// An operator ends an agent's registration (`POST /ath/admin/oauth/agents/{client_id}/revoke`):
    /// no new authorization or token for it, its open sessions denied, its tokens revoked, in one
    /// transaction. This process stops admitting them at once, other instances within
    /// `Configuration.revocationRecheck`. Returns how many tokens it revoked.
    public func revokeRegistration(clientID: String, by actor: String) async throws -> Int {
        let t = Freshness.unix(clock())
        let audit = [AuditEvent(at: t, event: "oauth.registration.revoked", actor: actor, subject: clientID, outcome: "revoked")]
        guard let digests = try await store.revokeRegistration(clientID: clientID, now: t, audit: audit) else {
            throw ATHError(.agentNotRegistered, "no agent is registered with this client_id")
        }
        for digest in digests { admitted.forget(digest) }
        return digests.count
    }

    // MARK: Checks shared by the use cases

    /// The client by its credentials: unknown id AGENT_NOT_REGISTERED, wrong secret INVALID_CLIENT
    /// (compared in constant time).
    func client(_ clientID: String, secret: String) async throws -> AgentRegistration {
        guard let registration = try await store.registration(clientID: clientID) else {
            throw ATHError(.agentNotRegistered, "no agent is registered with this client_id")
        }
        guard OpaqueSecret.matches(secret, digest: registration.secretDigest) else {
            throw ATHError(.invalidClient, "client_secret is not this client's")
        }
        try await limit(registration.agentID, now: clock())
        return registration
    }

    /// One call of `agentID` against `agentRateLimit`: RATE_LIMITED past it.
    func limit(_ agentID: String, now: Date) async throws {
        guard let rate = configuration.agentRateLimit else { return }
        try await limiter.admit("oauth:" + agentID, limit: rate, now: now)
    }

    func checkApproved(_ registration: AgentRegistration, now: Date) throws {
        guard registration.status == .approved, registration.approvalExpiresAt > Freshness.unix(now) else {
            throw ATHError(.agentUnapproved, "this agent's registration is \(registration.status.rawValue)")
        }
    }

    /// An attestation read, its claims checked, its signature verified against the agent's
    /// identity document (skipped in dev mode alone), its `jti` recorded until `exp` (a replay
    /// is refused).
    func attest(_ token: String, audience: String, now: Date) async throws -> AgentAttestation {
        let attestation = try AgentAttestation.read(token, audience: audience, now: now, policy: configuration.attestation)
        if !configuration.devMode { try await documents.verify(attestation) }
        guard try await store.consumeNonce(attestation.replayKey, expiresAt: attestation.expiresAt, now: Freshness.unix(now)) else {
            throw ATHError(.invalidAttestation, "this attestation's jti was used already")
        }
        return attestation
    }

    /// Redirect URIs are absolute, without a fragment, HTTPS or HTTP to loopback (RFC 8252 §7.3).
    static func checkRedirectURI(_ uri: String) throws {
        guard uri.utf8.count <= 2048, let url = URL(string: uri), let scheme = url.scheme?.lowercased(), let host = url.host,
            url.fragment == nil
        else { throw ATHError(.malformedMessage, "redirect_uris must be absolute URLs without a fragment") }
        let loopback = host == "127.0.0.1" || host == "localhost" || host == "::1" || host == "[::1]"
        guard scheme == "https" || (scheme == "http" && loopback) else {
            throw ATHError(.malformedMessage, "redirect_uris must use https (http only to a loopback host)")
        }
    }

    /// `base` with `items` added to its query, form-encoded (space as `+`).
    static func appending(_ items: [(String, String)], to base: String) -> String {
        let query = FormEncoding.encode(items)
        let (head, fragment) = base.firstIndex(of: "#").map { (String(base[..<$0]), String(base[$0...])) } ?? (base, "")
        return head + (head.contains("?") ? "&" : "?") + query + fragment
    }
}
