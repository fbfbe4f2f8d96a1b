import ATHCore
import ATHServer
import ATHStorePostgres
import Configuration
import Foundation
import HTTPTypes
import SystemPackage

/// Everything `ath gateway` runs from, read once at start from one file (YAML or JSON) through
/// swift-configuration, so that the environment (`GATEWAY_PUBLIC_URL`) and `--set key=value`
/// override any key. Every value is checked before anything listens; an error names the key
/// (docs/GATEWAY.md lists them all, examples/gateway.yaml is a complete example).
public struct GatewayConfiguration: Sendable {
    /// The base URL agents and browsers use, byte for byte (`gateway_id`, attestation `aud`).
    public var publicURL: String
    public var host: String
    public var port: Int
    /// Plain HTTP instead of TLS 1.3: only with a loopback listener.
    public var insecureHTTP: Bool
    /// Relaxes what the official v0.1 test suite needs (docs/GATEWAY.md); only on loopback.
    public var devMode: Bool
    public var serverDID: DID
    public var serverKeyFile: String
    /// Keys the gateway accepts without signing with them (`server.accepted_key_files`): the
    /// previous key while a rotation completes, or the next one before it signs.
    public var acceptedKeyFiles: [String]
    /// `store.sqlite` (the default, `gateway.sqlite`) or `store.postgres` for several instances.
    public var store: StoreLocation
    public var tls: TLS?
    public var limits: ConnectionLimits
    public var policy: ServerPolicy
    public var webhook: (url: String, secretFile: String)?
    public var sessionLifetime: Int64
    public var tokenLifetime: Int64
    /// Each v0.1 agent's calls; nil: unlimited (`oauth.agent_rate_limit: none`).
    public var agentRateLimit: RateLimit?
    /// Agents' identity documents may be fetched from loopback (and over plain HTTP there): for
    /// tests whose agents publish on the same machine; only with a loopback listener.
    public var identityDocumentsOnLoopback: Bool
    /// The oauth service native-mode agents reach through `/.well-known/ath-app.json`
    /// (`oauth.native_app`); nil: no such document.
    public var nativeApp: String?
    /// Seconds the proxy admits a remembered v0.1 token before reading its standing again
    /// (`oauth.revocation_recheck_seconds`, default 1; 0: every request reads the store).
    public var revocationRecheck: Int64
    /// Where `ath authz` answers nginx and Envoy: never the public listener, since an admitted
    /// v0.1 request's answer carries the provider's token for the proxy to use.
    public var authzHost: String
    public var authzPort: Int
    /// The admin API's bearer token (`admin.token_file`); nil: no admin API.
    public var adminToken: String?
    public var services: [Service]

    public struct TLS: Sendable, Equatable {
        public var certificateFile: String
        public var keyFile: String
        public var clientCAFile: String?
        public var crlFiles: [String]
        public var requireClientCertificate: Bool
    }

    public struct Service: Sendable {
        public enum Protection: String, Sendable {
            /// The 9-step handshake; the service is served under `/<name>/`.
            case ath
            /// The v0.1 OAuth-based API; the service is `/ath/proxy/<name>/`.
            case oauth
        }
        public var name: String
        public var `protocol`: Protection
        public var upstream: Upstream
        public var scopes: [(name: String, description: String)]
        public var operations: OperationMap
        /// A field added to every request to the upstream (its own API key), from a secret file.
        public var credential: HTTPField?
        /// The OAuth provider (for `oauth` services).
        public var provider: OAuthProvider?
    }

    /// Reads `file` (`.yaml`, `.yml` or `.json`) under the environment and `overrides`
    /// (`key=value`, the strongest).
    public static func load(file: String, overrides: [String] = [], environment: [String: String] = ProcessInfo.processInfo.environment)
        async throws -> GatewayConfiguration
    {
        // Overrides are read as environment variables are (GATEWAY_LISTEN_PORT for
        // gateway.listen.port): text converted to whatever type the key is read as.
        var values: [String: String] = [:]
        for override in overrides {
            guard let equals = override.firstIndex(of: "="), equals != override.startIndex else {
                throw GatewayConfigurationError(key: override, problem: "an override is written key=value")
            }
            let name = override[..<equals].uppercased().replacingOccurrences(of: ".", with: "_").replacingOccurrences(of: "-", with: "_")
            values[name] = String(override[override.index(after: equals)...])
        }
        let path = FilePath(file)
        guard FileManager.default.isReadableFile(atPath: file) else { throw GatewayConfigurationError(key: "--config", problem: "cannot read \(file)") }
        let fileProvider: any ConfigProvider
        do {
            switch path.extension?.lowercased() {
            case "json": fileProvider = try await FileProvider<JSONSnapshot>(filePath: path)
            case "yaml", "yml": fileProvider = try await FileProvider<YAMLSnapshot>(filePath: path)
            default: throw GatewayConfigurationError(key: "--config", problem: "the file must end in .yaml, .yml or .json")
            }
        } catch let error as GatewayConfigurationError {
            throw error
        } catch {
            throw GatewayConfigurationError(key: "--config", problem: "\(file) does not parse: \(error)")
        }
        let reader = ConfigReader(providers: [
            EnvironmentVariablesProvider(environmentVariables: values), EnvironmentVariablesProvider(environmentVariables: environment), fileProvider,
        ])
        let base = path.removingLastComponent().string
        return try GatewayConfiguration(Keys(reader: reader), relativeTo: base.isEmpty ? "." : base)
    }

    init(_ keys: Keys, relativeTo base: String) throws {
        func file(_ path: String) -> String { path.hasPrefix("/") ? path : base + "/" + path }
        publicURL = try keys.string("gateway.public_url")
        while publicURL.hasSuffix("/") { publicURL.removeLast() }
        guard let url = URL(string: publicURL), let scheme = url.scheme, ["http", "https"].contains(scheme), url.host != nil,
            url.query == nil, url.fragment == nil
        else { throw GatewayConfigurationError(key: "gateway.public_url", problem: "must be an absolute http(s) URL without query or fragment") }
        host = try keys.optionalString("gateway.listen.host") ?? "127.0.0.1"
        port = try keys.optionalInt("gateway.listen.port") ?? 8443
        guard (0...65535).contains(port) else { throw GatewayConfigurationError(key: "gateway.listen.port", problem: "must be 0-65535") }
        insecureHTTP = try keys.optionalBool("gateway.insecure_http") ?? false
        devMode = try keys.optionalBool("gateway.dev_mode") ?? false
        let loopback = ["127.0.0.1", "::1", "localhost"].contains(host)
        if devMode, !loopback {
            throw GatewayConfigurationError(key: "gateway.dev_mode", problem: "is refused with a listener that is not loopback (\(host))")
        }
        serverDID = try keys.parse("server.did") { try DID($0) }
        serverKeyFile = file(try keys.string("server.key_file"))
        acceptedKeyFiles = (try keys.optionalStrings("server.accepted_key_files") ?? []).map(file)
        if let url = try keys.optionalString("store.postgres") {
            guard try keys.optionalString("store.sqlite") == nil else {
                throw GatewayConfigurationError(key: "store.postgres", problem: "excludes store.sqlite: one store")
            }
            let parsed: PostgresStoreConfiguration
            do {
                parsed = try PostgresStoreConfiguration(url: url)
            } catch {
                throw GatewayConfigurationError(key: "store.postgres", problem: "\(error)")
            }
            if parsed.password != nil {
                throw GatewayConfigurationError(
                    key: "store.postgres", problem: "holds a password: keep it in store.postgres_password_file, out of the configuration")
            }
            store = .postgres(
                url: url, passwordFile: try keys.optionalString("store.postgres_password_file").map(file),
                maximumConnections: try keys.optionalInt("store.max_connections", in: 1...1000) ?? 20,
                operationTimeoutSeconds: try keys.optionalInt("store.operation_timeout_seconds", in: 1...300) ?? 5)
        } else {
            store = .sqlite(path: file(try keys.optionalString("store.sqlite") ?? "gateway.sqlite"))
        }

        if let certificate = try keys.optionalString("tls.certificate_file") {
            let clientCA = try keys.optionalString("tls.client_ca_file").map(file)
            let crls = try keys.optionalStrings("tls.crl_files")?.map(file) ?? []
            if clientCA != nil, crls.isEmpty, try keys.optionalBool("tls.no_crl") != true {
                throw GatewayConfigurationError(key: "tls.crl_files", problem: "tls.client_ca_file needs CRLs, or knowingly tls.no_crl: true")
            }
            tls = TLS(
                certificateFile: file(certificate), keyFile: file(try keys.string("tls.key_file")), clientCAFile: clientCA, crlFiles: crls,
                requireClientCertificate: try keys.optionalBool("tls.require_client_certificate") ?? false)
            guard !insecureHTTP else { throw GatewayConfigurationError(key: "gateway.insecure_http", problem: "excludes tls.certificate_file") }
        } else {
            guard insecureHTTP else {
                throw GatewayConfigurationError(key: "tls.certificate_file", problem: "is required (TLS 1.3), or gateway.insecure_http: true on loopback")
            }
            guard loopback else { throw GatewayConfigurationError(key: "gateway.insecure_http", problem: "is refused with a listener that is not loopback") }
        }

        limits = ConnectionLimits()
        if let s = try keys.optionalInt("limits.idle_timeout_seconds", in: 1...3600) { limits.idleTimeout = .seconds(s) }
        if let s = try keys.optionalInt("limits.header_timeout_seconds", in: 1...600) { limits.headerTimeout = .seconds(s) }
        if let s = try keys.optionalInt("limits.body_timeout_seconds", in: 1...3600) { limits.bodyTimeout = .seconds(s) }
        if let n = try keys.optionalInt("limits.max_connections", in: 1...1_000_000) { limits.maxConnections = n }

        if let url = try keys.optionalString("confirmation.webhook_url") {
            webhook = (url, file(try keys.string("confirmation.webhook_secret_file")))
        }
        sessionLifetime = Int64(try keys.optionalInt("oauth.session_lifetime_seconds", in: 30...600) ?? 600)
        tokenLifetime = Int64(try keys.optionalInt("oauth.token_lifetime_seconds", in: 60...86_400) ?? 3600)
        let rate = try keys.optionalString("oauth.agent_rate_limit") ?? "600/minute"
        if rate == "none" {
            agentRateLimit = nil
        } else {
            do {
                agentRateLimit = try RateLimit(parsing: rate)
            } catch {
                throw GatewayConfigurationError(key: "oauth.agent_rate_limit", problem: "'\(rate)' is not N/second|minute|hour|day, or none")
            }
        }
        revocationRecheck = Int64(try keys.optionalInt("oauth.revocation_recheck_seconds", in: 0...60) ?? 1)
        authzHost = try keys.optionalString("authz.listen.host") ?? "127.0.0.1"
        authzPort = try keys.optionalInt("authz.listen.port", in: 0...65535) ?? 9191
        identityDocumentsOnLoopback = try keys.optionalBool("oauth.identity_documents_on_loopback") ?? false
        adminToken = try keys.optionalString("admin.token_file").map { try Keys.secret(file($0), key: "admin.token_file") }
        if let token = adminToken, token.utf8.count < 32 {
            throw GatewayConfigurationError(key: "admin.token_file", problem: "holds fewer than 32 characters: make one with `openssl rand -hex 32`")
        }
        if identityDocumentsOnLoopback, !loopback {
            throw GatewayConfigurationError(key: "oauth.identity_documents_on_loopback", problem: "is refused with a listener that is not loopback")
        }

        let names = try keys.strings("services")
        guard !names.isEmpty else { throw GatewayConfigurationError(key: "services", problem: "names no service") }
        var services: [Service] = []
        var nativeScopes: [String: String] = [:]
        for name in names {
            guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-" || $0 == "_") }), name != "ath" else {
                throw GatewayConfigurationError(key: "services", problem: "'\(name)': names are lower-case letters, digits, - and _ (and not 'ath')")
            }
            guard !services.contains(where: { $0.name == name }) else { throw GatewayConfigurationError(key: "services", problem: "'\(name)' is named twice") }
            let service = try Service(keys, name: name, file: file)
            if service.protocol == .ath {
                for scope in service.scopes {
                    // Scopes are the grant's vocabulary: one name must mean one service's operations.
                    if let other = nativeScopes[scope.name] {
                        throw GatewayConfigurationError(key: "service.\(name).scopes", problem: "scope \(scope.name) is also service \(other)'s")
                    }
                    nativeScopes[scope.name] = name
                }
            }
            services.append(service)
        }
        self.services = services
        nativeApp = try keys.optionalString("oauth.native_app")
        if let app = nativeApp, !services.contains(where: { $0.name == app && $0.protocol == .oauth }) {
            throw GatewayConfigurationError(key: "oauth.native_app", problem: "'\(app)' is not an oauth service of this gateway")
        }

        let native = services.filter { $0.protocol == .ath }.flatMap(\.scopes)
        let restrictions = Restrictions(
            ip_whitelist: try keys.optionalStrings("handshake.ip_whitelist"), rate_limit: try keys.optionalString("handshake.rate_limit"),
            order_amount_limit: try keys.optionalDouble("handshake.order_amount_limit"), access_time: try keys.optionalString("handshake.access_time"))
        do {
            _ = try restrictions.validated()
        } catch {
            throw GatewayConfigurationError(key: "handshake", problem: "restrictions do not parse: \(error)")
        }
        var accountTypes: [String: [String]] = [:]
        for line in try keys.optionalStrings("handshake.account_types") ?? [] {
            let (type, scopes) = try Keys.named(line, key: "handshake.account_types")
            let list = scopes.split(separator: " ").map(String.init)
            for scope in list where nativeScopes[scope] == nil {
                throw GatewayConfigurationError(key: "handshake.account_types", problem: "type \(type) names scope \(scope), which no ath service offers")
            }
            accountTypes[type] = list
        }
        policy = ServerPolicy(
            scopesSupported: native.map(\.name), tokenMaxTTL: try keys.optionalInt("handshake.token_max_ttl_seconds", in: 60...86_400) ?? 7200,
            requireUserConfirmation: try keys.optionalBool("handshake.require_user_confirmation") ?? true,
            confirmationTimeout: try keys.optionalInt("handshake.confirmation_timeout_seconds", in: 10...3600) ?? 120,
            restrictions: restrictions, requireRegisteredClients: try keys.optionalBool("handshake.require_registered_clients") ?? false,
            accountTypes: accountTypes, scopeDescriptions: Dictionary(native.map { ($0.name, $0.description) }, uniquingKeysWith: { a, _ in a }))
    }
}

extension GatewayConfiguration.Service {
    init(_ keys: GatewayConfiguration.Keys, name: String, file: (String) -> String) throws {
        let prefix = "service.\(name)."
        self.name = name
        `protocol` = try keys.parse(prefix + "protocol") {
            guard let p = Protection(rawValue: $0) else { throw ATHError(.malformedMessage, "must be ath or oauth") }
            return p
        }
        let base = try keys.string(prefix + "upstream")
        guard let url = URL(string: base), ["http", "https"].contains(url.scheme ?? ""), url.host != nil, url.query == nil else {
            throw GatewayConfigurationError(key: prefix + "upstream", problem: "must be an absolute http(s) URL without a query")
        }
        upstream = Upstream(
            baseURL: base, timeout: .seconds(try keys.optionalInt(prefix + "timeout_seconds", in: 1...3600) ?? 30),
            maxRequestBody: try keys.optionalInt(prefix + "max_body_bytes", in: 0...(1 << 30)) ?? (10 << 20))
        scopes = try keys.strings(prefix + "scopes").map { try GatewayConfiguration.Keys.named($0, key: prefix + "scopes") }
        guard !scopes.isEmpty else { throw GatewayConfigurationError(key: prefix + "scopes", problem: "names no scope") }
        let routes = try keys.strings(prefix + "routes")
        do {
            operations = try OperationMap(parsing: routes)
        } catch let error as ATHError {
            throw GatewayConfigurationError(key: prefix + "routes", problem: error.message)
        }
        let offered = Set(scopes.map(\.name))
        for route in operations.routes where !offered.contains(route.scope) {
            throw GatewayConfigurationError(key: prefix + "routes", problem: "'\(route)' needs scope \(route.scope), which is not in \(prefix)scopes")
        }
        if let header = try keys.optionalString(prefix + "upstream_auth.header") {
            guard let fieldName = HTTPField.Name(header) else {
                throw GatewayConfigurationError(key: prefix + "upstream_auth.header", problem: "is not a header field name")
            }
            let value = try GatewayConfiguration.Keys.secret(file(try keys.string(prefix + "upstream_auth.value_file")), key: prefix + "upstream_auth.value_file")
            credential = HTTPField(name: fieldName, value: value)
        }
        guard `protocol` == .oauth else { return }
        guard credential == nil else {
            throw GatewayConfigurationError(key: prefix + "upstream_auth.header", problem: "an oauth service authenticates with the user's provider token")
        }
        let authentication = try keys.optionalString(prefix + "client_auth").map {
            guard let a = OAuthProvider.ClientAuthentication(rawValue: $0) else {
                throw GatewayConfigurationError(key: prefix + "client_auth", problem: "must be client_secret_post or client_secret_basic")
            }
            return a
        }
        for endpoint in ["authorization_endpoint", "token_endpoint"] {
            let value = try keys.string(prefix + endpoint)
            guard let url = URL(string: value), ["http", "https"].contains(url.scheme ?? ""), url.host != nil else {
                throw GatewayConfigurationError(key: prefix + endpoint, problem: "must be an absolute http(s) URL")
            }
        }
        provider = OAuthProvider(
            id: name, displayName: try keys.optionalString(prefix + "display_name") ?? name, scopes: scopes,
            categories: try keys.optionalStrings(prefix + "categories") ?? [],
            authorizationEndpoint: try keys.string(prefix + "authorization_endpoint"), tokenEndpoint: try keys.string(prefix + "token_endpoint"),
            clientID: try keys.string(prefix + "client_id"),
            clientSecret: try GatewayConfiguration.Keys.secret(file(try keys.string(prefix + "client_secret_file")), key: prefix + "client_secret_file"),
            clientAuthentication: authentication ?? .post, upstream: upstream, operations: operations)
    }
}

/// A configuration that cannot run, with the key at fault.
public struct GatewayConfigurationError: Error, CustomStringConvertible, Equatable {
    public var key: String
    public var problem: String

    public var description: String { "\(key): \(problem)" }
}
