import ATHAgent
import ATHCore
import ATHServer
import ATHStore
import ATHStoreSQLite
import ArgumentParser
import AsyncHTTPClient
import Crypto
import Foundation
import Hummingbird
import ShoppingExample
import Synchronization

/// Performance measurements (docs/PERFORMANCE.md): run them on a release build,
/// `swift run -c release ath bench ...`. Everything stays on loopback and stops by itself.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure handshakes per second and the cost of the access check (loopback only).",
        subcommands: [Crypto.self, Core.self, Handshakes.self, Middleware.self, Session.self, RPC.self, Waiters.self, Proxy.self, Hold.self, Sessions.self])

    /// Runs `body` from `concurrency` tasks until `seconds` pass; returns completed operations.
    static func load(seconds: Double, concurrency: Int, _ body: @escaping @Sendable (Int) async throws -> Void) async throws -> (Int, Double) {
        let counts = Counts()
        let start = ContinuousClock.now
        let end = start + .milliseconds(Int(seconds * 1000))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<concurrency {
                group.addTask {
                    while ContinuousClock.now < end {
                        do {
                            try await body(worker)
                            counts.done.add(1, ordering: .relaxed)
                        } catch {
                            if counts.failed.add(1, ordering: .relaxed).newValue == 1 { print("first failure: \(error)") }
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let elapsed = ContinuousClock.now - start
        let secondsElapsed = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let failed = counts.failed.load(ordering: .relaxed)
        if failed > 0 { print("failures: \(failed)") }
        return (counts.done.load(ordering: .relaxed), secondsElapsed)
    }

    /// Runs `body(route)` from `concurrency` tasks for `seconds`, the routes taking turns in
    /// slices of `slice` seconds; returns each route's rate and CPU per request. A request counts
    /// for its route only if it started and ended within one slice of that route, and a route's
    /// rate is those requests over its slices' time, so that requests crossing a change of route
    /// do not mix the two. The machine's speed drifts within seconds; turns this short put every
    /// route under the same drift, which rounds of seconds per route did not.
    static func interleaved(
        routes: Int, seconds: Double, slice: Double, concurrency: Int, _ body: @escaping @Sendable (Int) async throws -> Void
    ) async throws -> [(rate: Double, cpu: Double, switches: Double)] {
        final class Turns: Sendable {
            let phase = Atomic<Int>(0)
            let done: Mutex<[Int]>
            let failed = Atomic<Int>(0)
            init(routes: Int) { done = Mutex([Int](repeating: 0, count: routes)) }
        }
        let turns = Turns(routes: routes)
        let slices = max(routes, Int(seconds / slice) / routes * routes)
        var time = [Double](repeating: 0, count: routes)
        var cpu = [Double](repeating: 0, count: routes)
        var sw = [Int](repeating: 0, count: routes)
        let clock = ContinuousClock()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    while true {
                        let p = turns.phase.load(ordering: .acquiring)
                        if p >= slices { return }
                        do {
                            try await body(p % routes)
                            if turns.phase.load(ordering: .acquiring) == p { turns.done.withLock { $0[p % routes] += 1 } }
                        } catch {
                            if turns.failed.add(1, ordering: .relaxed).newValue == 1 { print("first failure: \(error)") }
                        }
                    }
                }
            }
            for i in 0..<slices {
                let (t0, c0, v0) = (clock.now, cpuSeconds(), switches())
                try await Task.sleep(for: .milliseconds(Int(slice * 1000)))
                let elapsed = clock.now - t0
                time[i % routes] += Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
                cpu[i % routes] += cpuSeconds() - c0
                sw[i % routes] += switches() - v0
                turns.phase.store(i + 1, ordering: .releasing)
            }
            try await group.waitForAll()
        }
        let failed = turns.failed.load(ordering: .relaxed)
        if failed > 0 { print("failures: \(failed)") }
        let counts = turns.done.withLock { $0 }
        return (0..<routes).map { r in
            let n = Double(max(counts[r], 1))
            return (Double(counts[r]) / time[r], cpu[r] / n * 1e6, Double(sw[r]) / n)
        }
    }

    final class Counts: Sendable {
        let done = Atomic<Int>(0)
        let failed = Atomic<Int>(0)
    }

    /// Voluntary context switches of this process so far (a thread that blocked or slept).
    static func switches() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_nvcsw
    }

    /// CPU time this process has used (user + system), in seconds.
    static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }

    /// Runs `load` and returns requests per second and CPU µs per request (client and server
    /// together: with equal client work, the difference between two routes is the server's).
    static func measured(
        _ what: String, seconds: Double, concurrency: Int, _ body: @escaping @Sendable (Int) async throws -> Void
    ) async throws -> (rate: Double, cpu: Double) {
        let cpu0 = cpuSeconds()
        let result = try await load(seconds: seconds, concurrency: concurrency, body)
        let cpu = (cpuSeconds() - cpu0) / Double(max(result.0, 1)) * 1e6
        let rate = Double(result.0) / result.1
        print(String(format: "%@: %d in %.2f s = %.0f/s, %.1f µs CPU per request", what, result.0, result.1, rate, cpu))
        return (rate, cpu)
    }

    static func report(_ what: String, _ result: (Int, Double)) -> Double {
        let rate = Double(result.0) / result.1
        print(String(format: "%@: %d in %.2f s = %.0f/s", what, result.0, result.1, rate))
        return rate
    }

    /// The platform on loopback with a policy that needs no human (steps 6-7 skipped) and no
    /// rate limit, and an agent holding a user's credential for goods:read.
    struct Platform {
        var service: ATHService
        var server: RunningServer
        var channels: SessionChannels
        var client: ATHClient
        var credential: String

        func handshake() async throws -> ATHSession {
            try await client.handshake(credential: credential, scopes: ["goods:read"], ttl: 3600, context: "bench")
        }
    }

    static func platform(store dir: URL) async throws -> Platform {
        let store = try SQLiteStore(path: dir.appendingPathComponent("bench.sqlite").path)
        var policy = ShoppingPlatform.policy
        policy.requireUserConfirmation = false
        policy.restrictions.rate_limit = nil
        let service = try await ATHService(
            identity: ServerIdentity(did: ShoppingPlatform.did, keys: [.generate(.es256)]), policy: policy, store: store)
        let channels = SessionChannels(service: service, methods: ShoppingPlatform.sessionMethods)
        let router = ShoppingPlatform.router(service: service, channels: channels)
        // The same handler as GET /api/goods, behind the same error-shaping middleware as every
        // /api route, without the access check; and with a middleware that does nothing more.
        router.group("open").add(middleware: ErrorShapeMiddleware<ATHRequestContext>()).get("goods") { request, _ in
            try ShoppingPlatform.searchGoods(request)
        }
        router.group("noop").add(middleware: ErrorShapeMiddleware<ATHRequestContext>()).add(middleware: NoopMiddleware()).get("goods") {
            request, _ in try ShoppingPlatform.searchGoods(request)
        }
        let server = try await RunningServer.start(router, sessionChannels: channels)
        let agentKey = PrivateKey.generate(.es256)
        let userKey = PrivateKey.generate(.es256)
        let agent = DID.key(agentKey.publicKey)
        let credential = try await UserCredential.issue(
            user: DID.key(userKey.publicKey), key: userKey, client: agent, scopes: ["goods:read"], validFor: 7200)
        return Platform(
            service: service, server: server, channels: channels, client: ATHClient(baseURL: server.baseURL, did: agent, key: agentKey), credential: credential)
    }

    static func tempDir() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ath-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// The floor under `bench core`: what the server's public-key operations alone cost.
    struct Crypto: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The cost of each public-key operation a server does per handshake.")
        @Option(help: "Iterations per operation.") var iterations: Int = 2000

        func run() async throws {
            let key = PrivateKey.generate(.es256)
            let message = Array(repeating: UInt8(7), count: 200)
            let signature = try key.signature(for: message)
            let peer = EphemeralKey.generate(.ecdhP256)
            let peerShare = peer.publicKey
            let did = DID.key(key.publicKey)
            let pem = key.publicKey.pem
            let clock = ContinuousClock()
            func time(_ what: String, _ op: () throws -> Void) rethrows -> Double {
                let start = clock.now
                for _ in 0..<iterations { try op() }
                let each = (clock.now - start) / iterations
                let micros = Double(each.components.attoseconds) / 1e12 + Double(each.components.seconds) * 1e6
                print(String(format: "%@: %.1f µs", what, micros))
                return micros
            }
            let sign = try time("ES256 sign") { _ = try key.signature(for: message) }
            let verify = time("ES256 verify") { _ = key.publicKey.isValidSignature(signature, for: message) }
            _ = time("ECDH-P256 key generation") { _ = EphemeralKey.generate(.ecdhP256) }
            let ecdh = try time("ECDH-P256 key generation + shared secret") {
                _ = try EphemeralKey.generate(.ecdhP256).sharedSecret(with: peerShare)
            }
            let symmetric = SymmetricKey(size: .bits256)
            _ = time("HMAC-SHA256 of 200 bytes") { _ = HMAC<SHA256>.authenticationCode(for: message, using: symmetric) }
            _ = time("HKDF-SHA256 (swift-crypto), 32 bytes") {
                _ = HKDF<SHA256>.deriveKey(inputKeyMaterial: symmetric, salt: message, info: Data("x".utf8), outputByteCount: 32)
            }
            _ = time("HKDF-SHA256 expand (swift-crypto), 32 bytes") {
                _ = HKDF<SHA256>.expand(pseudoRandomKey: symmetric, info: Data("x".utf8), outputByteCount: 32)
            }
            let shared = try EphemeralKey.generate(.ecdhP256).sharedSecret(with: peerShare)
            let transcriptHash = Data(SHA256.hash(data: message))
            _ = time("session key schedule (1 extract, 4 expands)") { _ = SessionSecrets(shared: shared, transcriptHash: transcriptHash) }
            _ = time("  the same through swift-crypto's HKDF") {
                let prk = shared.withUnsafeBytes { HKDF<SHA256>.extract(inputKeyMaterial: SymmetricKey(data: $0), salt: transcriptHash) }
                for label in ["ath/0.1 sid", "ath/0.1 pop", "ath/0.1 c2s", "ath/0.1 s2c"] {
                    _ = HKDF<SHA256>.expand(pseudoRandomKey: prk, info: Data(label.utf8), outputByteCount: 32)
                }
            }
            _ = try time("P-256 PEM parse") { _ = try PublicKey(pem: pem) }
            _ = try time("  through swift-crypto's PEM parser") { _ = try P256.Signing.PublicKey(pemRepresentation: pem) }
            if case .p256(let k) = key.publicKey {
                _ = time("P-256 compressed form of a parsed key") { _ = k.compressedRepresentation }
            }
            _ = try time("did:key P-256 decompression") { _ = try did.embeddedKey() }
            // The user credential check beside its one signature verification: the rest is JWT handling.
            let userKey = PrivateKey.generate(.es256)
            let credential = try await UserCredential.issue(
                user: DID.key(userKey.publicKey), key: userKey, client: did, scopes: ["goods:read"], validFor: 7200)
            let server = try DID("did:ath:bench")
            let n = iterations
            let t0 = clock.now
            for _ in 0..<n {
                _ = try await UserCredential.verify(credential, userKey: userKey.publicKey, client: did, server: server, now: Date())
            }
            let each = (clock.now - t0) / n
            print(String(format: "user credential verification (JWT): %.1f µs",
                Double(each.components.attoseconds) / 1e12 + Double(each.components.seconds) * 1e6))
            let t1 = clock.now
            for _ in 0..<n { _ = try await JWTCodec(verifying: userKey.publicKey) }
            let each1 = (clock.now - t1) / n
            print(String(format: "  of which a jwt-kit key collection: %.1f µs",
                Double(each1.components.attoseconds) / 1e12 + Double(each1.components.seconds) * 1e6))
            let signer = try await JWTCodec(key: key)
            let claims = AccessTokenClaims(
                iss: server.value, aud: server.value, sub: did.value, client_did: did.value, scope: "goods:read", iat: 1, exp: 2,
                jti: "j", gid: "g", sid: "s")
            let t2 = clock.now
            for _ in 0..<n { _ = try await signer.sign(claims, typ: AccessToken.typ) }
            let each2 = (clock.now - t2) / n
            print(String(format: "access token signing (JWT): %.1f µs",
                Double(each2.components.attoseconds) / 1e12 + Double(each2.components.seconds) * 1e6))
            _ = try time("  of which the unverified header parse") { _ = try JWTCodec.header(of: credential, error: .invalidUserCredential) }
            // A step-5 message's shape and size (the credential a JWT of the usual length).
            let m5 = try JSONValue.parse(Data("""
                {"handshake_id":"\(Nonce.generate())","key_exchange":{"alg":"ECDH-P256","public_key":"\(peer.publicKey)"},\
                "message_type":"ath:scope_request","scopes":["goods:read","order:create"],"ttl":3600,"context":"bench",\
                "timestamp":1790000000,"user_authorization":{"credential":"\(credential)","signature":"\(Nonce.generate(bytes: 64))"}}
                """.utf8))
            let m5Size = try CanonicalJSON.bytes(m5).count
            _ = try time("canonical JSON of a step-5 message (\(m5Size) bytes)") { _ = try CanonicalJSON.bytes(m5) }
            // What each step's write encodes: a handshake after step 3, its transcript four messages.
            var client = ClientHandshake(did: did, key: key)
            let policy = ServerPolicy(scopesSupported: ["goods:read"])
            let serverIdentity = ServerIdentity(did: server, keys: [.generate(.es256)])
            var (begun, m2) = try ServerHandshake.begin(
                request: try client.makeRequest(now: Date()), id: Nonce.generate(), identity: serverIdentity,
                policy: policy, registeredKey: nil, now: Date())
            // What step 1 answers with and step 3 opens instead of a write and a read.
            let tickets = HandshakeTicket(derivedFrom: serverIdentity)
            let ticket = try tickets.make(begun)
            _ = try time("handshake ticket after step 1 (\(ticket.utf8.count) bytes): made") { _ = try tickets.make(begun) }
            _ = try time("  opened") { _ = try tickets.open(ticket, handshakeID: begun.id) }
            _ = try begun.receiveIdentityProof(try client.receiveResponse(m2, now: Date()), policy: policy, now: Date())
            let document = try StoredDocument.encode(begun)
            _ = try time("stored document of a handshake after step 3 (\(document.utf8.count) bytes)") { _ = try StoredDocument.encode(begun) }
            _ = try time("  read back") { _ = try StoredDocument.decode(ServerHandshake.self, document) }
            let floor = 3 * sign + 3 * verify + ecdh
            print(String(format: "server floor per handshake (3 signs, 3 verifies, 1 ECDH): %.0f µs = %.0f handshakes/s per core",
                floor, 1e6 / floor))
        }
    }

    struct Core: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Full handshakes through the state machines alone (no HTTP, no store).")
        @Option(help: "Seconds to run.") var seconds: Double = 5
        @Option(help: "Concurrent handshakes.") var concurrency: Int = 2

        func run() async throws {
            let serverDID = ShoppingPlatform.did
            let identity = ServerIdentity(did: serverDID, keys: [.generate(.es256)])
            var unattended = ShoppingPlatform.policy
            unattended.requireUserConfirmation = false
            let policy = unattended
            let signer = try await JWTCodec(key: identity.tokenKey)
            let agentKey = PrivateKey.generate(.es256)
            let userKey = PrivateKey.generate(.es256)
            let agent = DID.key(agentKey.publicKey)
            let credential = try await UserCredential.issue(
                user: DID.key(userKey.publicKey), key: userKey, client: agent, scopes: ["goods:read"], validFor: 7200)
            let userKeys = DIDKeyVerifiers()
            // The server's share is timed apart, step by step: it is what one server core spends
            // per handshake.
            let steps = ["begin (1-2)", "identity proof (3-4)", "scope request (5)", "user credential", "authorize", "complete (8-9)"]
            let serverTime = Mutex<[Duration]>(Array(repeating: .zero, count: steps.count))
            let clock = ContinuousClock()
            let result = try await Bench.load(seconds: seconds, concurrency: concurrency) { _ in
                let now = Date()
                var spent = [Duration](repeating: .zero, count: steps.count)
                func timed<T>(_ step: Int, _ body: () throws -> T) rethrows -> T {
                    let t0 = clock.now
                    defer { spent[step] += clock.now - t0 }
                    return try body()
                }
                var client = ClientHandshake(did: agent, key: agentKey)
                let m1 = try client.makeRequest(now: now)
                var (server, m2) = try timed(0) {
                    try ServerHandshake.begin(request: m1, id: Nonce.generate(), identity: identity, policy: policy, registeredKey: nil, now: now)
                }
                let m3 = try client.receiveResponse(m2, now: now)
                let m4 = try timed(1) { try server.receiveIdentityProof(m3, policy: policy, now: now) }
                _ = try client.receiveIdentityResult(m4, now: now)
                let m5 = try client.makeScopeRequest(scopes: ["goods:read"], ttl: 3600, credential: credential, context: "bench", now: now)
                let request = try timed(2) { try server.receiveScopeRequest(m5, policy: policy, now: now) }
                // As the server does it: the credential read, then checked with its issuer's
                // did:key through the server's `DIDKeyVerifiers`.
                var t0 = clock.now
                let unverified = try UserCredential.read(credential)
                guard let claims = try await userKeys.verify(unverified, client: agent, server: serverDID, now: now) else {
                    throw ATHError(.internalError, "the credential's issuer is not a did:key")
                }
                spent[3] += clock.now - t0
                _ = try timed(4) {
                    try server.authorize(request, credential: claims, clientInfo: ClientInfo(name: "b", developer: "b"), policy: policy, now: now)
                }
                t0 = clock.now
                let completion = try await server.complete(policy: policy, tokenSigner: signer, identity: identity, now: now)
                spent[5] += clock.now - t0
                _ = try client.receiveOutcome(completion.outcome, now: now)
                let total = spent
                serverTime.withLock { for i in $0.indices { $0[i] += total[i] } }
            }
            _ = Bench.report("core handshakes (client and server in one process)", result)
            let perStep = serverTime.withLock { $0 }.map { $0 / result.0 }.map {
                Double($0.components.attoseconds) / 1e12 + Double($0.components.seconds) * 1e6
            }
            for (step, micros) in zip(steps, perStep) { print(String(format: "  %@: %.0f µs", step, micros)) }
            let micros = perStep.reduce(0, +)
            print(String(format: "server side alone: %.0f µs per handshake = %.0f handshakes/s per core%@", micros, 1e6 / micros,
                concurrency > 1 ? " (run with --concurrency 1 for an uncontended figure)" : ""))
        }
    }

    struct Handshakes: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Full handshakes over loopback HTTP with the SQLite store.")
        @Option(help: "Seconds to run.") var seconds: Double = 10
        @Option(help: "Concurrent agents.") var concurrency: Int = 8
        @OptionGroup var executor: ExecutorOptions

        func run() async throws {
            executor.apply()
            print("Swift tasks run on \(executor.summary)")
            let dir = try Bench.tempDir()
            defer { try? FileManager.default.removeItem(at: dir) }
            let platform = try await Bench.platform(store: dir)
            _ = try await Bench.measured("HTTP handshakes (agent, server and store in one process)", seconds: seconds, concurrency: concurrency) {
                _ in _ = try await platform.handshake()
            }
            await platform.server.stop()
        }
    }

    /// Agents waiting on the user (steps 6-7) in long polls: what they cost the server while
    /// nothing happens, and that every one of them is answered when the user decides.
    struct Waiters: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Agents waiting in long polls for the user's answer: the CPU they cost.")
        @Option(help: "Agents waiting, each on its own handshake.") var count: Int = 500
        @Option(help: "Seconds to measure while they wait.") var seconds: Double = 10
        @OptionGroup var executor: ExecutorOptions

        func run() async throws {
            executor.apply()
            let dir = try Bench.tempDir()
            defer { try? FileManager.default.removeItem(at: dir) }
            let store = try SQLiteStore(path: dir.appendingPathComponent("bench.sqlite").path)
            var policy = ShoppingPlatform.policy
            policy.restrictions.rate_limit = nil
            let service = try await ATHService(
                identity: ServerIdentity(did: ShoppingPlatform.did, keys: [.generate(.es256)]), policy: policy, store: store)
            let server = try await RunningServer.start(ShoppingPlatform.router(service: service))
            var configuration = HTTPClient.Configuration()
            configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = count + 16
            let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            let userKey = PrivateKey.generate(.es256)
            let user = DID.key(userKey.publicKey)
            var agents: [(ATHClient, String)] = []
            for _ in 0..<count {
                let key = PrivateKey.generate(.es256)
                let agent = DID.key(key.publicKey)
                let credential = try await UserCredential.issue(user: user, key: userKey, client: agent, scopes: ["goods:read"], validFor: 7200)
                agents.append((ATHClient(baseURL: server.baseURL, did: agent, key: key, httpClient: http), credential))
            }
            let waiting = agents.map { client, credential in
                Task { try await client.handshake(credential: credential, scopes: ["goods:read"], ttl: 600, context: "bench", confirmationWait: .seconds(100)) }
            }
            let userClient = ATHUserClient(baseURL: server.baseURL, did: user, key: userKey, server: ShoppingPlatform.did, httpClient: http)
            var pending: [AuthorizationConfirmationRequest] = []
            while pending.count < count {
                try await Task.sleep(for: .milliseconds(200))
                pending = try await userClient.pending()
            }
            try await Task.sleep(for: .seconds(1))
            let cpu0 = Bench.cpuSeconds()
            let start = ContinuousClock.now
            try await Task.sleep(for: .milliseconds(Int64(seconds * 1000)))
            let cpu = Bench.cpuSeconds() - cpu0
            let elapsed = ContinuousClock.now - start
            let wall = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            print(String(format: "%d agents waiting in long polls: %.2f %% of one core over %.1f s (server and idle agents in one process)", count, cpu / wall * 100, wall))
            for request in pending { _ = try await userClient.answer(request, approve: ["goods:read"]) }
            var completed = 0
            for task in waiting where (try? await task.value) != nil { completed += 1 }
            print("answered: \(completed) of \(count) handshakes completed")
            try await http.shutdown()
            await server.stop()
        }
    }

    struct Middleware: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Throughput of GET /api/goods with the ATH check against the same route unprotected.")
        @Option(help: "Seconds per round (the routes share them in slices).") var seconds: Double = 9
        @Option(help: "Seconds per slice: each route in turn for this long.") var slice: Double = 0.1
        @Option(help: "Rounds (odd; the median is reported).") var rounds: Int = 5
        @Option(help: "Concurrent connections.") var concurrency: Int = 16
        @Option(help: "Load only this route (open, noop or protected) for the given seconds, e.g. under a profiler.")
        var only: String?
        @OptionGroup var executor: ExecutorOptions

        func run() async throws {
            executor.apply()
            print("Swift tasks run on \(executor.summary)")
            let dir = try Bench.tempDir()
            defer { try? FileManager.default.removeItem(at: dir) }
            let platform = try await Bench.platform(store: dir)
            let (service, server) = (platform.service, platform.server)
            let session = try await platform.handshake()
            // Warm up, then measure each route with the same client work: the session adds the
            // token and a proof to both, so only the server's side differs.
            _ = try await session.get("/api/goods?keyword=phone")
            if let only {
                let target = ["open": "/open/goods?keyword=phone", "noop": "/noop/goods?keyword=phone", "protected": "/api/goods?keyword=phone"][only]
                guard let target else { throw ValidationError("--only is open, noop or protected") }
                _ = try await Bench.measured("\(only) GET \(target)", seconds: seconds, concurrency: concurrency) { _ in
                    _ = try await session.send("GET", target)
                }
                return await server.stop()
            }
            // The routes take turns in short slices within each round, so that the machine's drift
            // (its speed moves by 10-30% within seconds) hits all of them alike.
            let routes = ["/noop/goods?keyword=phone", "/open/goods?keyword=phone", "/api/goods?keyword=phone"]
            var open: [(rate: Double, cpu: Double)] = []
            var guarded: [(rate: Double, cpu: Double)] = []
            var losses: [Double] = []
            var floor: [Double] = []
            for round in 1...rounds {
                let results = try await Bench.interleaved(routes: routes.count, seconds: seconds, slice: slice, concurrency: concurrency) { route in
                    let r = try await session.send("GET", routes[route])
                    guard r.status == 200 else { throw ATHError(.internalError, "status \(r.status)") }
                }
                for (route, result) in zip(["noop-middleware GET /noop/goods", "unprotected GET /open/goods", "protected GET /api/goods"], results) {
                    print(String(format: "round %d %@: %.0f/s, %.1f µs CPU and %.2f voluntary context switches per request",
                        round, route, result.rate, result.cpu, result.switches))
                }
                open.append((results[1].rate, results[1].cpu))
                guarded.append((results[2].rate, results[2].cpu))
                losses.append((1 - results[2].rate / results[1].rate) * 100)
                floor.append(abs(1 - results[0].rate / results[1].rate) * 100)
            }
            // The check alone, without HTTP: proofs made beforehand, then only the server's work timed.
            let target = "/api/goods?keyword=phone"
            var facts: [ATHService.RequestFacts] = []
            for _ in 0..<20_000 {
                let h = await session.authHeaders("GET", target, Data())
                facts.append(.init(method: "GET", target: target, authorization: h[0].1, proof: h[1].1, body: [], remoteAddress: "127.0.0.1"))
            }
            let clock = ContinuousClock()
            let start = clock.now
            for f in facts { _ = try await service.authorize(f, scope: "goods:read") }
            let each = (clock.now - start) / facts.count
            print(String(format: "access check alone (in process, no HTTP): %.1f µs per request",
                Double(each.components.attoseconds) / 1e12 + Double(each.components.seconds) * 1e6))
            // The same with one HTTP request (to the open route) between two checks, timing only
            // the checks: what the check costs when the server's other work has had the caches.
            do {
                var interleaved: [ATHService.RequestFacts] = []
                for _ in 0..<5_000 {
                    let h = await session.authHeaders("GET", target, Data())
                    interleaved.append(.init(method: "GET", target: target, authorization: h[0].1, proof: h[1].1, body: [], remoteAddress: "127.0.0.1"))
                }
                var total = Duration.zero
                for f in interleaved {
                    _ = try await session.send("GET", "/open/goods?keyword=phone")
                    let t0 = clock.now
                    _ = try await service.authorize(f, scope: "goods:read")
                    total += clock.now - t0
                }
                let each = total / interleaved.count
                print(String(format: "access check between HTTP requests (cold caches): %.1f µs per request",
                    Double(each.components.attoseconds) / 1e12 + Double(each.components.seconds) * 1e6))
            }
            // The same from two tasks at once (both cores, one session): CPU per check.
            var fresh: [ATHService.RequestFacts] = []
            for _ in 0..<20_000 {
                let h = await session.authHeaders("GET", target, Data())
                fresh.append(.init(method: "GET", target: target, authorization: h[0].1, proof: h[1].1, body: [], remoteAddress: "127.0.0.1"))
            }
            let halves = [Array(fresh[..<10_000]), Array(fresh[10_000...])]
            let cpu0 = Bench.cpuSeconds()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for half in halves { group.addTask { for f in half { _ = try await service.authorize(f, scope: "goods:read") } } }
                try await group.waitForAll()
            }
            print(String(format: "access check from two tasks at once: %.1f µs CPU per request", (Bench.cpuSeconds() - cpu0) / 20_000 * 1e6))
            let median = { (xs: [Double]) in xs.sorted()[xs.count / 2] }
            let (openRate, guardedRate) = (median(open.map(\.rate)), median(guarded.map(\.rate)))
            let (openCPU, guardedCPU) = (median(open.map(\.cpu)), median(guarded.map(\.cpu)))
            print(String(format: "median: unprotected %.0f/s, protected %.0f/s", openRate, guardedRate))
            print(String(format: "median CPU per request: unprotected %.1f µs, protected %.1f µs (+%.1f µs)", openCPU, guardedCPU, guardedCPU - openCPU))
            print(String(format: "throughput lost to the access check: %.1f%% (median of the rounds' losses; rounds: %@)", median(losses),
                losses.map { String(format: "%.1f", $0) }.joined(separator: ", ")))
            // The no-op middleware does the open route's work and a little more: how far the two
            // rates differ is the measurement's own noise, against which to read the loss.
            print(String(format: "noise: the no-op middleware route differs from the open route by %.1f%% (median of the rounds)", median(floor)))
            await server.stop()
        }
    }
}

/// A middleware that does nothing but pass a changed context on: what any middleware costs,
/// to tell the access check's own cost from the routing's.
struct NoopMiddleware: RouterMiddleware {
    typealias Context = ATHRequestContext
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        context.ath = nil
        return try await next(request, context)
    }
}

extension Bench {
    /// The session layer's codec against swift-crypto's AES-GCM alone, in the same run.
    struct Session: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Seal+open throughput of ATTN/1 frames at 64 B, 1 KiB and 16 KiB, next to raw AES-256-GCM seal+open.")
        @Option(help: "Seconds per size and kind of measurement.") var seconds: Double = 2

        func run() async throws {
            let secret = SymmetricKey(size: .bits256)
            let sid = (0..<16).map { _ in UInt8.random(in: 0...255) }
            let raw = SymmetricKey(size: .bits256)
            let nonce = AES.GCM.Nonce()
            print("size     ATTN/1 frames/s   MB/s     raw AES-GCM /s   MB/s     ratio")
            for size in [64, 1024, 16 * 1024] {
                let payload = [UInt8](repeating: 0x5A, count: size)
                var sealer = SessionSealer(
                    keys: SessionTrafficKeys(secret: secret, suite: .aes256gcm), direction: .clientToServer, sessionID: sid, now: Date())
                var opener = SessionOpener(
                    keys: SessionTrafficKeys(secret: secret, suite: .aes256gcm), direction: .clientToServer, sessionID: sid)
                let now = Date()
                // Alternating 50 ms slices, so that the machine's drift (2-3x here) hits both alike.
                var (framed, plain) = (0.0, 0.0)
                let slices = max(1, Int(seconds / 0.05))
                for _ in 0..<slices {
                    framed += try Self.rate(0.05) {
                        let frame = try sealer.seal(.call, payload, now: now)
                        guard case .success = opener.open(frame) else { throw SessionRefusal.tampered }
                    }
                    plain += try Self.rate(0.05) {
                        let box = try AES.GCM.seal(payload, using: raw, nonce: nonce)
                        _ = try AES.GCM.open(box, using: raw)
                    }
                }
                framed /= Double(slices)
                plain /= Double(slices)
                func mb(_ rate: Double) -> String { String(format: "%7.1f", rate * Double(size) / 1e6) }
                print(
                    String(format: "%-8d %14.0f", size, framed) + "  " + mb(framed) + "   " + String(format: "%14.0f", plain) + "  " + mb(plain)
                        + String(format: "   %5.1f%%", framed / plain * 100))
            }
        }

        /// Operations per second of `body` over `seconds` (one core).
        static func rate(_ seconds: Double, _ body: () throws -> Void) throws -> Double {
            let clock = ContinuousClock()
            let start = clock.now
            var count = 0
            while true {
                for _ in 0..<64 { try body() }
                count += 64
                let elapsed = clock.now - start
                let secs = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
                if secs >= seconds { return Double(count) / secs }
            }
        }
    }
}

extension Bench {
    /// RPC round trips over each transport of the session layer, next to the same operation as
    /// a protected HTTP request, on loopback (client and server in this process).
    struct RPC: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "RPC round trips per second over WebSocket, TCP, UDP and HTTP channels, and the HTTP API for comparison.")
        @Option(help: "Seconds per transport.") var seconds: Double = 5
        @Option(help: "Concurrent calls (all on one channel).") var concurrency: Int = 16
        @OptionGroup var executor: ExecutorOptions

        func run() async throws {
            executor.apply()
            print("Swift tasks run on \(executor.summary)")
            let dir = try tempDir()
            defer { try? FileManager.default.removeItem(at: dir) }
            let platform = try await Bench.platform(store: dir)
            let tcp = try await SessionTCPListener.start(channels: platform.channels)
            let udp = try await SessionUDPListener.start(channels: platform.channels)
            let session = try await platform.handshake()
            let routes: [(String, ATHSessionChannel.Route)] = [
                ("websocket", .webSocket()), ("tcp", .tcp(host: "127.0.0.1", port: tcp.port)),
                ("udp", .udp(host: "127.0.0.1", port: udp.port)), ("http", .http),
            ]
            print("goods.search {keyword: phone} (a 64-byte call frame, a 320-byte reply), \(concurrency) calls in flight on one channel")
            for (name, route) in routes {
                let channel = try await session.openChannel(route)
                _ = try await channel.call("goods.search", ["keyword": "phone"])
                _ = try await Bench.measured(name.padding(toLength: 10, withPad: " ", startingAt: 0), seconds: seconds, concurrency: concurrency) { _ in
                    _ = try await channel.call("goods.search", ["keyword": "phone"])
                }
                await channel.close()
            }
            _ = try await Bench.measured("HTTP API  ", seconds: seconds, concurrency: concurrency) { _ in
                let response = try await session.get("/api/goods?keyword=phone")
                guard response.status == 200 else { throw ATHError(.internalError, "status \(response.status)") }
            }
            await tcp.stop()
            await udp.stop()
            await platform.channels.shutdown()
            await platform.server.stop()
        }
    }
}
