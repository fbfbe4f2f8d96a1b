import ATHCore
import ATHIdentity
import ATHServer
import ATHStore
import ATHStoreSQLite
import AsyncHTTPClient
import Crypto
import Foundation
import Hummingbird
import Logging
import NIOCore
import Synchronization

/// `ath gateway`: the 9-step handshake, the consent console and the v0.1 API in front of
/// services that do not change, from one `GatewayConfiguration`.
///
/// Everything that must survive a restart (grants, tokens, registrations, sessions, used nonces)
/// is in the store, so stopping and starting again (a new configuration, a new binary) drops
/// only the requests in flight, and no grant.
public final class Gateway: Sendable {
    /// The configuration in force: the one it started with, or the last one `reload` applied.
    public var configuration: GatewayConfiguration { state.withLock { $0.configuration } }
    public let server: RunningServer
    /// `ath authz`'s listener for nginx and Envoy (nil for `ath gateway`).
    public let authz: RunningServer?
    public let service: ATHService
    public let store: any ATHStore & OAuthAPIStore
    /// The store as opened, closed at `stop`.
    let opened: StoreLocation.Opened
    let mode: Mode
    let upstreamClient: HTTPClient
    let webhook: WebhookConfirmationChannel?
    /// What the listeners answer with, swapped whole by `reload`.
    let mainRoutes: RouteTable
    let checkRoutes: RouteTable?
    private let state: Mutex<(configuration: GatewayConfiguration, oauth: OAuthAPIService?)>

    public var baseURL: String { server.baseURL }

    private init(
        configuration: GatewayConfiguration, mode: Mode, server: RunningServer, authz: RunningServer?, service: ATHService, opened: StoreLocation.Opened,
        upstreamClient: HTTPClient, webhook: WebhookConfirmationChannel?, routes: Routes, mainRoutes: RouteTable,
        checkRoutes: RouteTable?
    ) {
        self.mode = mode
        self.server = server
        self.authz = authz
        self.service = service
        self.opened = opened
        self.store = opened.store
        self.upstreamClient = upstreamClient
        self.webhook = webhook
        self.mainRoutes = mainRoutes
        self.checkRoutes = checkRoutes
        self.state = Mutex((configuration, routes.oauth))
    }

    public enum Mode: Sendable {
        /// `ath gateway`: the gateway forwards admitted requests itself.
        case proxy
        /// `ath authz`: another proxy forwards them and asks the authz listener first; the
        /// main listener serves the handshake, the console and the v0.1 API without forwarding.
        case externalAuthorization
    }

    static func loadKey(_ file: String, key: String) throws -> PrivateKey {
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            throw GatewayConfigurationError(key: key, problem: "cannot read \(file)")
        }
        do {
            return try PrivateKey(pem: text)
        } catch {
            throw GatewayConfigurationError(key: key, problem: "\(file) is not a P-256 or Ed25519 private key (PEM): make one with `ath keygen`")
        }
    }

    public static func start(
        _ configuration: GatewayConfiguration, mode: Mode = .proxy, logger: Logger = Logger(label: "ath.gateway")
    ) async throws -> Gateway {
        let key = try Self.loadKey(configuration.serverKeyFile, key: "server.key_file")
        let accepted = try configuration.acceptedKeyFiles.map { try Self.loadKey($0, key: "server.accepted_key_files") }
        let opened: StoreLocation.Opened
        do {
            opened = try await configuration.store.open(logger: logger)
        } catch {
            let key = if case .postgres = configuration.store { "store.postgres" } else { "store.sqlite" }
            throw GatewayConfigurationError(key: key, problem: "cannot open \(configuration.store.description): \(error)")
        }
        let store = opened.store
        var trust: AgentTrust?
        var tls: ServerTLS?
        if let t = configuration.tls {
            do {
                trust = try t.clientCAFile.map { try AgentTrust.load(rootsFile: $0, crlFiles: t.crlFiles) }
            } catch {
                throw GatewayConfigurationError(key: "tls.client_ca_file", problem: "\(error)")
            }
            let mode: ServerTLS.ClientCertificates = trust.map { t.requireClientCertificate ? .required($0) : .optional($0) } ?? .none
            do {
                tls = try ServerTLS.load(certificateFile: t.certificateFile, keyFile: t.keyFile, clientCertificates: mode)
            } catch {
                throw GatewayConfigurationError(key: "tls.certificate_file", problem: "\(error)")
            }
        }
        var channel: any UserConfirmationChannel = PullConfirmationChannel()
        var webhook: WebhookConfirmationChannel?
        if let (url, secretFile) = configuration.webhook {
            let secret = try GatewayConfiguration.Keys.secret(secretFile, key: "confirmation.webhook_secret_file")
            let hook = WebhookConfirmationChannel(.init(url: url, secret: SymmetricKey(data: Data(secret.utf8))), answerBaseURL: configuration.publicURL)
            (channel, webhook) = (hook, hook)
        }
        let service = try await ATHService(
            identity: ServerIdentity(did: configuration.serverDID, keys: [key], acceptedKeys: accepted), policy: configuration.policy, store: store, channel: channel,
            logger: logger, agentCertificates: trust.map { AgentCertificatePolicy(trust: $0, required: false) })
        tls?.auditRefusals(to: service)

        // One pool for every upstream: connections are kept and reused per host.
        var clientConfiguration = HTTPClient.Configuration(redirectConfiguration: .disallow)
        clientConfiguration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
        clientConfiguration.decompression = .disabled
        // A service that refuses connections is answered UPSTREAM_UNAVAILABLE at once; retrying
        // until the request's deadline would hold every agent for the whole timeout.
        clientConfiguration.connectionPool.retryConnectionEstablishment = false
        // No spans: the gateway records no traces, and the default (no-op) tracer still had every
        // request's attributes computed, about 3 % of a proxied request's CPU.
        clientConfiguration.tracing.tracer = nil
        let upstreamClient = HTTPClient(eventLoopGroupProvider: .singleton, configuration: clientConfiguration)
        let routes = Self.routes(
            configuration, mode: mode, service: service, store: store, upstreamClient: upstreamClient, previous: nil)
        if configuration.devMode {
            for line in [
                "DEV MODE: agent attestation signatures are NOT verified and /ath/token does not compare the code.",
                "DEV MODE: for the official test suites on loopback only; never run a gateway for real users this way.",
            ] { logger.warning("\(line)") }
        }
        let mainRoutes = RouteTable(routes.main)
        let checkRoutes = routes.checks.map(RouteTable.init)
        var authz: RunningServer?
        let server: RunningServer
        do {
            if let checkRoutes {
                authz = try await RunningServer.start(
                    checkRoutes.router(), host: configuration.authzHost, port: configuration.authzPort, limits: configuration.limits)
            }
            server = try await RunningServer.start(
                mainRoutes.router(), host: configuration.host, port: configuration.port, tls: tls, limits: configuration.limits)
        } catch {
            await authz?.stop()
            try? await upstreamClient.shutdown()
            await opened.close()
            throw error
        }
        return Gateway(
            configuration: configuration, mode: mode, server: server, authz: authz, service: service, opened: opened,
            upstreamClient: upstreamClient, webhook: webhook, routes: routes, mainRoutes: mainRoutes, checkRoutes: checkRoutes)
    }

    /// What the listeners serve for one configuration: the main listener's routes, the checks'
    /// (`ath authz` only), and the v0.1 API's service when an oauth service is configured.
    struct Routes {
        var main: Router<ATHRequestContext>
        var checks: Router<ATHRequestContext>?
        var oauth: OAuthAPIService?
    }

    static func routes(
        _ configuration: GatewayConfiguration, mode: Mode, service: ATHService, store: any ATHStore & OAuthAPIStore, upstreamClient: HTTPClient,
        previous: OAuthAPIService?
    ) -> Routes {
        let forwarder = UpstreamForwarder(httpClient: upstreamClient)
        let scheme = configuration.tls == nil ? "http" : "https"
        let router = Router(context: ATHRequestContext.self)
        HandshakeRoutes<ATHRequestContext>(service: service).register(on: router)
        ConsoleRoutes<ATHRequestContext>(service: service).register(on: router)
        let native = configuration.services.filter { $0.protocol == .ath }.map {
            ProtectedService(mount: $0.name, upstream: $0.upstream, operations: $0.operations, credential: $0.credential)
        }
        if mode == .proxy {
            ProtectedUpstreamRoutes<ATHRequestContext>(service: service, forwarder: forwarder, upstreams: native, scheme: scheme).register(on: router)
        }
        let providers = configuration.services.compactMap(\.provider)
        var oauth: OAuthAPIService?
        if providers.isEmpty {
            router.get("health") { _, _ in ["status": "ok"] }
        } else {
            var api = OAuthAPIService.Configuration(publicURL: configuration.publicURL, providers: providers)
            api.devMode = configuration.devMode
            api.sessionLifetime = configuration.sessionLifetime
            api.tokenLifetime = configuration.tokenLifetime
            api.agentRateLimit = configuration.agentRateLimit
            api.nativeApp = configuration.nativeApp
            api.revocationRecheck = configuration.revocationRecheck
            let oauthService: OAuthAPIService
            if let previous {
                oauthService = previous.reconfigured(api)
            } else {
                var documents = AgentIdentityDocuments.Policy()
                documents.allowLoopback = configuration.identityDocumentsOnLoopback
                oauthService = OAuthAPIService(
                    api, store: store, sealer: service.sealer, httpClient: upstreamClient,
                    documents: AgentIdentityDocuments(policy: documents), limiter: service.limiter)
            }
            OAuthAPIRoutes<ATHRequestContext>(
                service: oauthService, forwarder: mode == .proxy ? forwarder : nil, scheme: scheme, refusals: service.refusals
            ).register(on: router)
            oauth = oauthService
        }
        if let token = configuration.adminToken {
            AdminRoutes<ATHRequestContext>(service: service, adminToken: token, oauth: oauth).register(on: router)
        }
        var checks: Router<ATHRequestContext>?
        if mode == .externalAuthorization {
            let router = Router(context: ATHRequestContext.self)
            ExternalAuthorizationRoutes<ATHRequestContext>(service: service, oauth: oauth, protected: native).register(on: router)
            checks = router
        }
        return Routes(main: router, checks: checks, oauth: oauth)
    }

    /// Applies a new configuration without closing a connection (`ath gateway` on SIGHUP): the
    /// services (upstreams, routes, timeouts, upstream credentials, providers), the v0.1
    /// API's settings and the admin token. Requests in flight finish on the routes they started with; grants,
    /// tokens, rate counters and admitted tokens are kept. A change to anything else (listeners,
    /// TLS, keys, store, limits, the handshake's policy and therefore the ath services' scopes,
    /// confirmation) needs a restart: the reload is refused, naming that key, and nothing changes.
    public func reload(_ new: GatewayConfiguration) throws {
        let old = configuration
        if let key = Self.restartOnlyChange(from: old, to: new) {
            throw GatewayConfigurationError(key: key, problem: "changed; this needs a restart (a reload applies services and oauth settings)")
        }
        let previous = state.withLock { $0.oauth }
        let routes = Self.routes(
            new, mode: mode, service: service, store: store, upstreamClient: upstreamClient, previous: previous)
        mainRoutes.set(routes.main)
        if let checks = routes.checks { checkRoutes?.set(checks) }
        state.withLock { $0 = (new, routes.oauth) }
    }

    /// The first key whose change a reload cannot apply, nil when there is none.
    static func restartOnlyChange(from a: GatewayConfiguration, to b: GatewayConfiguration) -> String? {
        let fixed: [(String, Bool)] = [
            ("gateway.public_url", a.publicURL == b.publicURL), ("gateway.listen", a.host == b.host && a.port == b.port),
            ("gateway.insecure_http", a.insecureHTTP == b.insecureHTTP), ("gateway.dev_mode", a.devMode == b.devMode),
            ("server.did", a.serverDID == b.serverDID), ("server.key_file", a.serverKeyFile == b.serverKeyFile),
            ("server.accepted_key_files", a.acceptedKeyFiles == b.acceptedKeyFiles),
            ("store", a.store == b.store), ("tls", a.tls == b.tls), ("limits", a.limits == b.limits),
            ("handshake (or the scopes of an ath service)", a.policy == b.policy),
            ("confirmation", a.webhook?.url == b.webhook?.url && a.webhook?.secretFile == b.webhook?.secretFile),
            ("authz.listen", a.authzHost == b.authzHost && a.authzPort == b.authzPort),
            ("oauth.identity_documents_on_loopback", a.identityDocumentsOnLoopback == b.identityDocumentsOnLoopback),
        ]
        return fixed.first { !$0.1 }?.0
    }

    /// Stops accepting, lets requests in flight finish, then closes upstream connections and
    /// writes the queued audit records.
    public func stop() async {
        await server.stop()
        await authz?.stop()
        try? await upstreamClient.shutdown()
        await webhook?.shutdown()
        await service.refusals.flush()
        await opened.close()
    }
}
