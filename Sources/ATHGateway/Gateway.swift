import ATHCore
import ATHIdentity
import ATHServer
import ATHStore
import AsyncHTTPClient
import Crypto
import Foundation
import Hummingbird
import Logging
import NIOCore

/// `ath gateway`: the 9-step handshake, the consent console and the v0.1 API in front of
/// services that do not change, from one `GatewayConfiguration`.
///
/// Everything that must survive a restart (grants, tokens, registrations, sessions, used nonces)
/// is in the store, so stopping and starting again (a new configuration, a new binary) drops
/// only the requests in flight, and no grant.
public final class Gateway: Sendable {
    public let configuration: GatewayConfiguration
    public let server: RunningServer
    /// `ath authz`'s listener for nginx and Envoy (nil for `ath gateway`).
    public let authz: RunningServer?
    public let service: ATHService
    public let store: SQLiteStore
    let upstreamClient: HTTPClient
    let webhook: WebhookConfirmationChannel?

    public var baseURL: String { server.baseURL }

    private init(
        configuration: GatewayConfiguration, server: RunningServer, authz: RunningServer?, service: ATHService, store: SQLiteStore,
        upstreamClient: HTTPClient, webhook: WebhookConfirmationChannel?
    ) {
        self.configuration = configuration
        self.server = server
        self.authz = authz
        self.service = service
        self.store = store
        self.upstreamClient = upstreamClient
        self.webhook = webhook
    }

    public enum Mode: Sendable {
        /// `ath gateway`: the gateway forwards admitted requests itself.
        case proxy
        /// `ath authz`: another proxy forwards them and asks the authz listener first; the
        /// main listener serves the handshake, the console and the v0.1 API without forwarding.
        case externalAuthorization
    }

    public static func start(
        _ configuration: GatewayConfiguration, mode: Mode = .proxy, logger: Logger = Logger(label: "ath.gateway")
    ) async throws -> Gateway {
        let keyText: String
        do {
            keyText = try String(contentsOfFile: configuration.serverKeyFile, encoding: .utf8)
        } catch {
            throw GatewayConfigurationError(key: "server.key_file", problem: "cannot read \(configuration.serverKeyFile)")
        }
        let key: PrivateKey
        do {
            key = try PrivateKey(pem: keyText)
        } catch {
            throw GatewayConfigurationError(key: "server.key_file", problem: "is not a P-256 or Ed25519 private key (PEM): make one with `ath keygen`")
        }
        let store: SQLiteStore
        do {
            store = try SQLiteStore(path: configuration.storePath)
        } catch {
            throw GatewayConfigurationError(key: "store.sqlite", problem: "cannot open \(configuration.storePath): \(error)")
        }
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
            identity: ServerIdentity(did: configuration.serverDID, keys: [key]), policy: configuration.policy, store: store, channel: channel,
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
        let forwarder = UpstreamForwarder(httpClient: upstreamClient)
        let scheme = tls == nil ? "http" : "https"

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
            var documents = AgentIdentityDocuments.Policy()
            documents.allowLoopback = configuration.identityDocumentsOnLoopback
            let oauthService = OAuthAPIService(
                api, store: store, sealer: SecretSealer(derivedFrom: key), httpClient: upstreamClient,
                documents: AgentIdentityDocuments(policy: documents))
            OAuthAPIRoutes<ATHRequestContext>(
                service: oauthService, forwarder: mode == .proxy ? forwarder : nil, scheme: scheme, refusals: service.refusals
            ).register(on: router)
            oauth = oauthService
        }
        if configuration.devMode {
            for line in [
                "DEV MODE: agent attestation signatures are NOT verified and /ath/token does not compare the code.",
                "DEV MODE: for the official test suites on loopback only; never run a gateway for real users this way.",
            ] { logger.warning("\(line)") }
        }
        var authz: RunningServer?
        let server: RunningServer
        do {
            if mode == .externalAuthorization {
                let checks = Router(context: ATHRequestContext.self)
                ExternalAuthorizationRoutes<ATHRequestContext>(service: service, oauth: oauth, protected: native).register(on: checks)
                authz = try await RunningServer.start(checks, host: configuration.authzHost, port: configuration.authzPort, limits: configuration.limits)
            }
            server = try await RunningServer.start(router, host: configuration.host, port: configuration.port, tls: tls, limits: configuration.limits)
        } catch {
            await authz?.stop()
            try? await upstreamClient.shutdown()
            throw error
        }
        return Gateway(
            configuration: configuration, server: server, authz: authz, service: service, store: store, upstreamClient: upstreamClient,
            webhook: webhook)
    }

    /// Stops accepting, lets requests in flight finish, then closes upstream connections and
    /// writes the queued audit records.
    public func stop() async {
        await server.stop()
        await authz?.stop()
        try? await upstreamClient.shutdown()
        await webhook?.shutdown()
        await service.refusals.flush()
    }
}
