import ATHAgent
import ATHCore
import ATHIdentity
import ATHServer
import ATHStore
import ATHStoreSQLite
import ArgumentParser
import Crypto
import Foundation
import ShoppingExample
import UnixSignals
import X509

@main
struct ATHCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ath",
        abstract: "Agent Trust Handshake: the trusted handshake between a user, an AI agent and a service.",
        subcommands: [
            Demo.self, Keygen.self, User.self, Serve.self, GatewayCommand.self, AuthzCommand.self, Handshake.self, Agent.self, AccountCommand.self, AuditCommand.self, CACommand.self,
            Bench.self,
        ])
}

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the seed-001 shopping scenario end to end on loopback (a temporary SQLite store).")

    @Flag(help: "Print each step as a JSON line instead of text.")
    var json = false

    func run() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ath-demo-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let json = self.json
        let scenario = ShoppingScenario(storePath: dir.appendingPathComponent("ath.sqlite").path) { line in
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                print(String(decoding: (try? encoder.encode(line)) ?? Data(), as: UTF8.self))
            } else {
                print("[\(line.actor)] \(line.step == "api" || line.step.count > 2 ? "" : "step \(line.step): ")\(line.text)")
            }
        }
        let result = try await scenario.run()
        let ok =
            result.goodsStatus == 200 && result.orderStatus == 201 && result.overLimitError?.code == .amountLimitExceeded
            && result.ungrantedScopeError?.code == .scopeInsufficient && result.sessionGoodsFound > 0
            && result.sessionOverLimitError?.code == .amountLimitExceeded
        if !json { print(ok ? "demo: every step behaved as the scenario expects" : "demo: an expectation failed") }
        if !ok { throw ExitCode.failure }
    }
}

struct Keygen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Generate a signing key (PKCS#8 PEM) and print its public key and did:key.")

    @Option(help: "ES256 or EdDSA.") var alg: String = "ES256"
    @Option(name: .shortAndLong, help: "Where to write the private key (mode 0600).") var out: String

    func run() async throws {
        guard let algorithm = SignatureAlgorithm(rawValue: alg) else {
            throw ValidationError("--alg must be ES256 or EdDSA")
        }
        guard !FileManager.default.fileExists(atPath: out) else { throw ValidationError("\(out) exists; not overwriting a key") }
        let key = PrivateKey.generate(algorithm)
        guard FileManager.default.createFile(atPath: out, contents: Data(key.pem.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw ValidationError("cannot write \(out)")
        }
        print(key.publicKey.pem)
        print("did:key  \(DID.key(key.publicKey))")
        print("kid      \(key.publicKey.thumbprint)")
    }
}

struct User: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The user's side.", subcommands: [Authorize.self, Watch.self, Credentials.self, EnrollBrowser.self])

    /// The user's connection to a server's user API, signing with the user's key.
    struct Connection: ParsableArguments {
        @Option(help: "Server base URL.") var url: String
        @Option(help: "The server's DID.") var server: String
        @Option(help: "The user's DID.") var user: String
        @Option(help: "The user's private key file.") var key: String
        @OptionGroup var tls: ClientTLSOptions

        func client() throws -> ATHUserClient {
            ATHUserClient(baseURL: url, did: try DID(user), key: try loadKey(key), server: try DID(server), httpClient: try tls.httpClient())
        }
    }

    struct Authorize: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue a pre-authorization credential (a user-signed JWT) to an agent.")

        @Option(help: "The user's DID (did:ath:... registered with the server, or did:key:...).") var user: String
        @Option(help: "The user's private key file.") var key: String
        @Option(help: "The agent's DID.") var client: String
        @Option(help: "Comma-separated scopes.") var scopes: String
        @Option(help: "Validity in seconds.") var ttl: Int = 7200
        @Option(help: "Restrict to one server DID.") var audience: String?

        func run() async throws {
            let credential = try await UserCredential.issue(
                user: DID(user), key: loadKey(key), client: DID(client), scopes: scopes.split(separator: ",").map(String.init),
                validFor: ttl, audience: audience.map(DID.init))
            print(credential)
        }
    }

    struct Watch: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Wait for pending confirmation requests and answer them.")

        @OptionGroup var connection: Connection
        @Flag(help: "Approve every request without asking (for scripts).") var approveAll = false
        @Flag(help: "Answer what is pending and exit.") var once = false

        func run() async throws {
            let client = try connection.client()
            var answered = Set<String>()
            repeat {
                for request in try await client.pending() where !answered.contains(request.request_id) {
                    answered.insert(request.request_id)
                    print("\(request.client_info.name) (\(request.client_info.developer)) asks for: \(request.requested_scopes.joined(separator: ", "))")
                    print("purpose: \(request.context)")
                    var approve = approveAll
                    if !approveAll {
                        print("approve? [y/N] ", terminator: "")
                        fflush(nil)
                        approve = readLine()?.lowercased().hasPrefix("y") ?? false
                    }
                    let receipt = try await client.answer(request, approve: approve ? request.requested_scopes : [])
                    print(receipt["status"]?.stringValue ?? "answered")
                    fflush(nil)  // seen at once, also through a pipe or in a log file
                }
                if !once { try await Task.sleep(for: .seconds(2)) }
            } while !once
        }
    }
}

extension User {
    struct EnrollBrowser: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "enroll-browser",
            abstract: "Print a one-time link (5 minutes) that lets a browser make its own key for the consent console and add it to your account.")
        @OptionGroup var connection: Connection

        func run() async throws {
            let token = try await UserRequestToken.make(
                user: try DID(connection.user), key: try loadKey(connection.key), server: try DID(connection.server), now: Date(),
                typ: ConsoleLogin.enrollmentTyp)
            // Plain-HTTP loopback servers: browsers keep the console's Secure cookie for "localhost", not "127.0.0.1".
            let base = connection.url.replacingOccurrences(of: "://127.0.0.1", with: "://localhost")
            print("\(base)/ath/console#enroll=\(token)")
        }
    }

    struct Credentials: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the credentials the server has seen from you, or revoke one (its grants end with it).")

        @OptionGroup var connection: Connection
        @Option(help: "Revoke the credential with this jti (write --revoke=<jti> when it starts with '-').") var revoke: String?

        func run() async throws {
            let client = try connection.client()
            if let revoke {
                let grants = try await client.revokeCredential(revoke)
                print("revoked \(revoke); grants ended: \(grants.isEmpty ? "none" : grants.joined(separator: ", "))")
                return
            }
            for c in try await client.credentials() {
                let state = c.revoked_at.map { "revoked at \($0)" } ?? "\(c.active_grants) of \(c.grants) grants active"
                print("\(c.jti)  \(c.client_did.isEmpty ? "(never used)" : c.client_did)  \(state)")
            }
        }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve the example shopping platform with ATH on loopback.")

    @Option(help: "SQLite file.") var store: String = "ath.sqlite"
    @OptionGroup var database: DatabaseOptions
    @Option(help: "The server's private key file (generated with `ath keygen`).") var key: String
    @Option(
        name: .customLong("accept-key"),
        help: "A key file the server accepts without signing with it: the previous key during a rotation, or the next one before it signs (repeatable)."
    ) var acceptKeys: [String] = []
    @Option(help: "Port (0 picks a free one).") var port: Int = 8080
    @Option(help: "Also serve the session layer's raw TCP transport on this loopback port (0: a free one).") var sessionTCPPort: Int?
    @Option(help: "Also serve the session layer's UDP transport on this loopback port (0: a free one).") var sessionUDPPort: Int?
    @Option(help: "Register an account unless it exists: kind:did=keyfile.pub.pem=name (repeatable; kind user or agent).")
    var register: [String] = []
    @Option(help: "File holding the admin API token (created with a random token, mode 0600, if absent). Default: <store>.admin-token (with --database: ath.admin-token)")
    var adminTokenFile: String?
    @Option(help: "Also push each confirmation request to this URL (signed, retried); the user still answers through the API.")
    var webhookURL: String?
    @Option(help: "File holding the webhook's shared secret (created at random, mode 0600, if absent). Default: <store>.webhook-secret (with --database: ath.webhook-secret)")
    var webhookSecretFile: String?
    @OptionGroup var tls: ServeTLSOptions
    @Option(help: "Let users sign in with this OpenID Connect provider (its issuer URL) in the console and the user API.")
    var oidcIssuer: String?
    @Option(help: "This server's client id at --oidc-issuer.") var oidcClientID: String?
    @Option(help: "File holding the client secret for --oidc-client-id.") var oidcClientSecretFile: String?
    @Option(help: "The base URL browsers reach this server at (for the OpenID redirect). Default: https://127.0.0.1:<port>")
    var publicURL: String?
    @OptionGroup var connections: ConnectionLimitOptions
    @OptionGroup var executor: ExecutorOptions

    func openID() throws -> OpenIDProvider? {
        guard let oidcIssuer else {
            guard oidcClientID == nil, oidcClientSecretFile == nil else { throw ValidationError("--oidc-client-id needs --oidc-issuer") }
            return nil
        }
        guard let oidcClientID, let oidcClientSecretFile else {
            throw ValidationError("--oidc-issuer needs --oidc-client-id and --oidc-client-secret-file")
        }
        guard port != 0 || publicURL != nil else { throw ValidationError("--oidc-issuer needs a fixed --port or --public-url") }
        guard let text = try? String(contentsOfFile: oidcClientSecretFile, encoding: .utf8),
            case let secret = text.trimmingCharacters(in: .whitespacesAndNewlines), !secret.isEmpty
        else { throw ValidationError("cannot read the OpenID client secret from \(oidcClientSecretFile)") }
        let base = publicURL ?? "\(tls.insecureHTTP ? "http" : "https")://127.0.0.1:\(port)"
        return OpenIDProvider(
            .init(issuer: oidcIssuer, clientID: oidcClientID, clientSecret: secret, redirectURI: base + "/ath/console/oidc/callback"))
    }

    /// Where the secrets the server makes for itself are kept by default: beside the SQLite file,
    /// or, on PostgreSQL (no file of its own), as ath.* in the working directory.
    var secretsPrefix: String { database.database == nil ? store : "ath" }

    func run() async throws {
        let openID = try openID()
        let trust = try tls.trust()
        executor.apply()
        connections.raiseDescriptorLimit()
        let opened = try await database.location(sqlite: store).open()
        let db = opened.store
        for entry in register {
            let parts = entry.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, let kind = Account.Kind(rawValue: String(parts[0])) else { throw ValidationError("bad --register \(entry)") }
            let rest = parts[1].split(separator: "=")
            guard rest.count == 3 else { throw ValidationError("--register wants kind:did=publickey.pem=name") }
            let key = try PublicKey(pem: readText(String(rest[1]), "the key file"))
            // Serving the same store again: the account is there already (its keys are managed
            // with `ath account`, not replaced from here).
            guard try await db.account(did: String(rest[0])) == nil else { continue }
            try await db.registerAccount(Account(did: String(rest[0]), kind: kind, name: String(rest[2])), key: key)
        }
        var channel: any UserConfirmationChannel = PullConfirmationChannel()
        var webhook: WebhookConfirmationChannel?
        if let webhookURL {
            guard port != 0 else { throw ValidationError("--webhook-url needs a fixed --port: pushes name the URL to answer at") }
            let secretFile = webhookSecretFile ?? secretsPrefix + ".webhook-secret"
            let secret = SymmetricKey(data: Data(try Self.secret(at: secretFile, named: "webhook secret").utf8))
            // The push names where to answer: this server, which listens on loopback.
            let hook = WebhookConfirmationChannel(
                .init(url: webhookURL, secret: secret), answerBaseURL: "\(tls.insecureHTTP ? "http" : "https")://127.0.0.1:\(port)")
            print("pushing confirmation requests to \(webhookURL) (secret in \(secretFile))")
            (channel, webhook) = (hook, hook)
        }
        let service = try await ATHService(
            identity: ServerIdentity(did: ShoppingPlatform.did, keys: [loadKey(key)], acceptedKeys: acceptKeys.map(loadKey)),
            policy: ShoppingPlatform.policy, store: db,
            channel: channel, agentCertificates: trust.map { AgentCertificatePolicy(trust: $0, required: tls.requireAgentCertificate) },
            openID: openID)
        // The encrypted session layer: HTTP and WebSocket on the same port, TCP and UDP if asked.
        let sessions = SessionChannels(service: service, methods: ShoppingPlatform.sessionMethods)
        let router = ShoppingPlatform.router(service: service, channels: sessions)
        let tokenFile = adminTokenFile ?? secretsPrefix + ".admin-token"
        AdminRoutes<ATHRequestContext>(service: service, adminToken: try Self.secret(at: tokenFile, named: "admin token")).register(on: router)
        var serverTLS = try tls.serverTLS(trust: trust)
        serverTLS?.auditRefusals(to: service)
        let server = try await RunningServer.start(router, port: port, tls: serverTLS, sessionChannels: sessions, limits: connections.limits)
        print("\(ShoppingPlatform.did) listening on \(server.baseURL) (store \(try database.location(sqlite: store).description); admin API token in \(tokenFile))")
        var tcp: SessionTCPListener?
        var udp: SessionUDPListener?
        if let sessionTCPPort { tcp = try await SessionTCPListener.start(channels: sessions, port: sessionTCPPort, tls: serverTLS) }
        if let sessionUDPPort { udp = try await SessionUDPListener.start(channels: sessions, port: sessionUDPPort) }
        if let tcp { print("session layer over TCP\(serverTLS == nil ? "" : " (TLS 1.3)") on 127.0.0.1:\(tcp.port)") }
        if let udp { print("session layer over UDP on 127.0.0.1:\(udp.port)") }
        fflush(nil)  // a script waiting for this line gets it at once, also through a pipe
        // Stop in order on Ctrl-C or SIGTERM: in-flight requests finish, queued audit records are written.
        for await signal in await UnixSignalsSequence(trapping: .sigint, .sigterm) {
            print("\(signal): stopping")
            break
        }
        await tcp?.stop()
        await udp?.stop()
        await sessions.shutdown()
        await server.stop()
        await webhook?.shutdown()
        await service.refusals.flush()
    }
}

/// What the agent needs to run a handshake: shared by `ath handshake` and `ath agent call`.
struct HandshakeOptions: ParsableArguments {
    @Option(help: "Server base URL.") var url: String
    @Option(help: "The agent's DID.") var did: String
    @Option(help: "The agent's private key file.") var key: String
    @Option(help: "The user's credential (or @file).") var credential: String
    @Option(help: "Comma-separated scopes.") var scopes: String
    @Option(help: "Requested ttl in seconds.") var ttl: Int = 3600
    @Option(help: "Why the agent asks (shown to the user).") var context: String = "run a task for the user"
    @OptionGroup var tls: ClientTLSOptions
    @Option(help: "The agent's certificate chain (PEM, leaf first; its key is --key): presented for mutual TLS.") var cert: String?
    @Flag(help: "Also send --cert in step 3 credentials (for a server behind a TLS-terminating proxy).") var sendCertificate = false

    func handshake() async throws -> ATHSession {
        let cred = credential.hasPrefix("@") ? try String(contentsOfFile: String(credential.dropFirst()), encoding: .utf8) : credential
        let agentKey = try loadKey(key)
        if sendCertificate, cert == nil { throw ValidationError("--send-certificate needs --cert") }
        var credentials: [String]?
        if sendCertificate, let cert {
            credentials = AgentTLS(serverRoots: [], certificateChain: try Certificate.bundle(file: cert)).credentials
        }
        // Over plain HTTP (a proxy in development) the chain can only travel in step 3.
        let mutual = url.hasPrefix("https:") ? cert : nil
        let client = ATHClient(
            baseURL: url, did: try DID(did), key: agentKey, httpClient: try tls.httpClient(certificate: mutual, key: agentKey),
            credentials: credentials)
        do {
            return try await client.handshake(
                credential: cred.trimmingCharacters(in: .whitespacesAndNewlines), scopes: scopes.split(separator: ",").map(String.init),
                ttl: ttl, context: context
            ) { event in
                if case .waitingForUser = event { FileHandle.standardError.write(Data("waiting for the user to confirm...\n".utf8)) }
            }
        } catch let error as ATHError {
            throw error
        } catch {
            // Transport failures (a TLS alert says nothing of why): say what to check.
            throw TransportFailure(url: url, underlying: "\(error)", withCertificate: cert != nil)
        }
    }
}

/// A connection that failed below ATH, with the likely causes named.
struct TransportFailure: Error, CustomStringConvertible {
    var url: String
    var underlying: String
    var withCertificate: Bool

    var description: String {
        var hints = ["is the server running at \(url)?"]
        if url.hasPrefix("https:") {
            hints.append("--ca must name the CA of the server's certificate")
            hints.append(
                withCertificate
                    ? "the server may have refused --cert (revoked, expired, another CA: its log says why)"
                    : "a server that requires agent certificates needs --cert")
        }
        return "could not talk to the server (\(underlying)); " + hints.joined(separator: "; ")
    }
}

extension Serve {
    /// A secret (the admin token, the webhook secret) from `path`, or a new random one (256
    /// bits) written there readable by the owner only.
    static func secret(at path: String, named name: String) throws -> String {
        if let existing = try? String(contentsOfFile: path, encoding: .utf8) {
            let token = existing.trimmingCharacters(in: .whitespacesAndNewlines)
            guard token.utf8.count >= 22 else { throw ValidationError("\(path) holds no usable \(name) (22 characters at least)") }
            return token
        }
        let token = Nonce.generate()
        guard FileManager.default.createFile(atPath: path, contents: Data((token + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
            throw ValidationError("cannot write the \(name) to \(path)")
        }
        return token
    }
}

struct Handshake: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the 9-step handshake as the agent and print the grant (the session's secrets stay in memory).")

    @OptionGroup var options: HandshakeOptions
    @Flag(help: "Print the grant as JSON.") var json = false

    func run() async throws {
        let grant = try await options.handshake().grant
        if json {
            let value: JSONValue = [
                "handshake_id": .string(grant.handshakeID), "grant_id": .string(grant.grantID), "server_did": .string(grant.serverDID.value),
                "scopes_granted": .array(grant.scopesGranted.map(JSONValue.string)),
                "scopes_denied": try JSONValue.of(grant.scopesDenied), "ttl_granted": .integer(Int64(grant.ttlGranted)),
                "grant_expires_at": .integer(grant.grantExpiresAt), "restrictions": try JSONValue.of(grant.restrictions),
                "token_expires_at": .integer(grant.tokenExpiresAt), "cipher_suite": .string(grant.cipherSuite),
                "session_id": .string(grant.secrets.sessionID),
            ]
            print(String(decoding: try CanonicalJSON.bytes(value), as: UTF8.self))
            return
        }
        print("handshake \(grant.handshakeID) with \(grant.serverDID): grant \(grant.grantID)")
        print("  granted: \(grant.scopesGranted.joined(separator: ", "))")
        for denied in grant.scopesDenied { print("  denied:  \(denied.scope) (\(denied.reason))") }
        print("  ttl \(grant.ttlGranted) s; access token until \(grant.tokenExpiresAt) (unix), grant until \(grant.grantExpiresAt)")
        let r = grant.restrictions
        let limits = [
            r.rate_limit.map { "rate \($0)" }, r.order_amount_limit.map { "amount <= \((try? CanonicalJSON.number($0)) ?? "\($0)")" },
            r.ip_whitelist.map { "from \($0.joined(separator: " "))" }, r.access_time.map { "during \($0)" },
        ].compactMap { $0 }
        print("  restrictions: \(limits.isEmpty ? "none" : limits.joined(separator: ", "))")
    }
}

struct Agent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Act as the agent.", subcommands: [Call.self, RPC.self])

    struct RPC: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Handshake with a server, then call one RPC method over an encrypted session channel (ATTN/1).")

        @OptionGroup var options: HandshakeOptions
        @Option(help: "websocket, tcp, udp or http (POST of frames).") var transport: String = "http"
        @Option(help: "The server's session port, for tcp and udp (ath serve --session-tcp-port / --session-udp-port).") var port: Int?
        @Option(help: "The name the server's certificate is checked against (websocket, tcp over TLS) when --url names an IP address.")
        var serverName: String?
        @Option(help: "The call's parameters (a JSON value).") var params: String = "{}"
        @Argument(help: "The method, e.g. goods.search") var method: String

        func run() async throws {
            let params = try JSONValue.parse(Data(self.params.utf8))
            guard let url = URL(string: options.url), let host = url.host() else { throw ValidationError("--url is not a URL") }
            let route: ATHSessionChannel.Route
            switch transport {
            case "http": route = .http
            case "websocket", "tcp":
                // Over https:// the session's other connections use the same TLS (and certificate).
                let secure = options.url.hasPrefix("https:")
                let tls = secure ? try options.tls.configuration(certificate: options.cert, key: try loadKey(options.key)) : nil
                if transport == "websocket" {
                    route = .webSocket(tls: tls, serverName: serverName)
                } else {
                    guard let port else { throw ValidationError("--transport tcp needs --port") }
                    route = .tcp(host: host, port: port, tls: tls, serverName: serverName)
                }
            case "udp":
                guard let port else { throw ValidationError("--transport udp needs --port") }
                route = .udp(host: host, port: port)
            default: throw ValidationError("--transport is websocket, tcp, udp or http")
            }
            let session = try await options.handshake()
            let channel = try await session.openChannel(route)
            let result = try await channel.call(method, params)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(result), as: UTF8.self))
            await channel.close()
        }
    }

    struct Call: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Handshake with a server, then send one API request.")

        @OptionGroup var options: HandshakeOptions
        @Option(help: "HTTP method.") var method: String = "GET"
        @Option(help: "JSON body.") var body: String?
        @Argument(help: "Request target, e.g. /api/goods?keyword=phone") var target: String

        func run() async throws {
            let session = try await options.handshake()
            let json = try body.map { try JSONValue.parse(Data($0.utf8)) }
            let response = try await session.send(method, target, json: json)
            print("HTTP \(response.status)")
            print(String(decoding: response.body, as: UTF8.self))
        }
    }
}

func loadKey(_ path: String) throws -> PrivateKey {
    try PrivateKey(pem: readText(path, "the key file"))
}
