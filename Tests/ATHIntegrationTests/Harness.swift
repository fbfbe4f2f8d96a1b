import ATHAgent
import ATHCore
import ATHServer
import ATHStore
import ATHStorePostgres
import ATHStoreSQLite
import AsyncHTTPClient
import Foundation
import ShoppingExample

/// A shopping platform on a loopback port with a fresh store (a SQLite file, or a database of
/// the test PostgreSQL), an agent and a user.
struct Harness {
    let dir: URL
    let store: any ATHStore
    /// The PostgreSQL database to drop at `stop` (nil on SQLite).
    var database: (store: PostgresStore, url: String, name: String)?
    let service: ATHService
    let server: RunningServer
    /// The session layer's channels (HTTP and WebSocket transports on `server`).
    let channels: SessionChannels
    /// The client every SDK call of the harness goes through (TLS when the server has TLS).
    var httpClient: HTTPClient = .shared
    let agentKey = PrivateKey.generate()
    let userKey = PrivateKey.generate()
    let agent = try! DID("did:ath:assistant")
    let user = try! DID("did:ath:alice")

    static func start(
        policy: ServerPolicy = ShoppingPlatform.policy, storeDir: URL? = nil, serverKey: PrivateKey = .generate(), acceptedKeys: [PrivateKey] = [],
        channel: any UserConfirmationChannel = PullConfirmationChannel(), tls: ServerTLS? = nil,
        agentCertificates: AgentCertificatePolicy? = nil, openID: OpenIDProvider? = nil, port: Int = 0,
        sessions: SessionChannels.Configuration = .init(), methods: SessionRPCRoutes = ShoppingPlatform.sessionMethods,
        limits: ConnectionLimits = .init(), retention: ATHService.Retention = .init(), backend: Backend = .sqlite,
        store given: (any ATHStore)? = nil
    ) async throws -> Harness {
        let dir = storeDir ?? FileManager.default.temporaryDirectory.appendingPathComponent("ath-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let store: any ATHStore
        var database: (store: PostgresStore, url: String, name: String)?
        switch backend {
        case _ where given != nil:
            store = given!
        case .sqlite:
            store = try SQLiteStore(path: dir.appendingPathComponent("ath.sqlite").path)
        case .postgres:
            let opened = try await TestPostgres.openStore()
            (store, database) = (opened.store, opened)
        }
        let service = try await ATHService(
            identity: ServerIdentity(did: ShoppingPlatform.did, keys: [serverKey], acceptedKeys: acceptedKeys), policy: policy, store: store, channel: channel,
            agentCertificates: agentCertificates, openID: openID, retention: retention)
        let channels = SessionChannels(service: service, methods: methods, configuration: sessions)
        let server = try await RunningServer.start(
            ShoppingPlatform.router(service: service, channels: channels), port: port, tls: tls, sessionChannels: channels, limits: limits)
        var harness = Harness(dir: dir, store: store, service: service, server: server, channels: channels)
        harness.database = database
        return harness
    }

    init(dir: URL, store: any ATHStore, service: ATHService, server: RunningServer, channels: SessionChannels) {
        self.dir = dir
        self.store = store
        self.service = service
        self.server = server
        self.channels = channels
    }

    /// The same store opened again, as a new process would after a restart. Closed with the
    /// harness on PostgreSQL; a SQLite file needs no closing.
    func reopenedStore() async throws -> any ATHStore {
        if let database { return try await PostgresStore.open(url: database.url) }
        return try SQLiteStore(path: dir.appendingPathComponent("ath.sqlite").path)
    }

    func registerParties() async throws {
        try await store.registerAccount(Account(did: user.value, kind: .user, name: "Alice"), key: userKey.publicKey)
        try await store.registerAccount(Account(did: agent.value, kind: .agent, name: "Assistant", developer: "Dev"), key: agentKey.publicKey)
    }

    func credential(scopes: [String] = ["goods:read", "order:create"], validFor: Int = 7200, client: DID? = nil, key: PrivateKey? = nil, now: Date = Date()) async throws -> String {
        try await UserCredential.issue(user: user, key: key ?? userKey, client: client ?? agent, scopes: scopes, validFor: validFor, now: now)
    }

    var client: ATHClient {
        ATHClient(baseURL: server.baseURL, did: agent, key: agentKey, expectedServer: ShoppingPlatform.did, httpClient: httpClient)
    }
    var userClient: ATHUserClient {
        ATHUserClient(baseURL: server.baseURL, did: user, key: userKey, server: ShoppingPlatform.did, httpClient: httpClient)
    }

    /// Runs a handshake while the user answers the first pending request with `approve`
    /// (nil: every requested scope; []: deny; no answer at all when `answer` is false).
    func handshake(
        scopes: [String] = ["goods:read", "order:create"], ttl: Int = 7200, credential: String? = nil,
        approve: [String]? = nil, answer: Bool = true, userKey: PrivateKey? = nil, client: ATHClient? = nil
    ) async throws -> ATHSession {
        let cred: String
        if let credential { cred = credential } else { cred = try await self.credential() }
        let userClient =
            userKey.map { ATHUserClient(baseURL: server.baseURL, did: user, key: $0, server: ShoppingPlatform.did, httpClient: httpClient) }
            ?? self.userClient
        let userTask = Task {
            guard answer else { return }
            for _ in 0..<100 {
                if let request = try await userClient.pending().first {
                    _ = try await userClient.answer(request, approve: approve ?? request.requested_scopes)
                    return
                }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        defer { userTask.cancel() }
        return try await (client ?? self.client).handshake(
            credential: cred, scopes: scopes, ttl: ttl, context: "test", confirmationWait: .seconds(20))
    }

    func stop() async {
        await channels.shutdown()
        await server.stop()
        // As `ath serve` does on its way out: refusals still counted are written before the store goes.
        await service.refusals.flush()
        try? FileManager.default.removeItem(at: dir)
        if let database { await TestPostgres.release(database.store, name: database.name) }
    }
}

extension ATHError {
    static func code(_ error: any Error) -> ATHError.Code? { (error as? ATHError)?.code }
}
