import ATHAgent
import ATHCore
import ArgumentParser
import Foundation
import Synchronization

extension Bench {
    /// Load on a running gateway's 9-step protected route, which wrk cannot make: every request
    /// carries the access token and a fresh proof of possession. One handshake first (the
    /// gateway must not need the user's live confirmation: `handshake.require_user_confirmation:
    /// false`), with did:key agent and user that need no account; then `concurrency` agents'
    /// connections send requests for `seconds`. The server's CPU is for the caller to read from
    /// the kernel (Benchmarks/gateway/run.sh does), since the server is another process.
    struct Proxy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Requests with token and proof (or whole handshakes) against a running gateway's protected route: rate, p50 and p99.")
        enum Operation: String, ExpressibleByArgument, CaseIterable {
            /// A request with the access token and a fresh proof.
            case request
            /// A whole handshake (steps 1-9, no user confirmation), with a credential of its own.
            case handshake
            /// A handshake, then one request with its token: every operation leaves the server
            /// one more live token and session to remember.
            case handshakeAndRequest = "handshake-and-request"
        }
        @Option(help: "The gateway's base URL.") var url: String
        @Option(help: "What one operation is: request, handshake or handshake-and-request.") var operation: Operation = .request
        @Option(help: "The protected path, e.g. /bench/userinfo.") var path: String
        @Option(help: "The scope the path needs.") var scope: String
        @Option(help: "Seconds of load after one second of warm-up.") var seconds: Double = 10
        @Option(help: "Requests in flight at once.") var concurrency: Int = 32
        @OptionGroup var executor: ExecutorOptions

        func run() async throws {
            executor.apply()
            let (agentKey, userKey) = (PrivateKey.generate(.es256), PrivateKey.generate(.es256))
            let agent = DID.key(agentKey.publicKey)
            let credential = try await UserCredential.issue(
                user: DID.key(userKey.publicKey), key: userKey, client: agent, scopes: [scope], validFor: 7200)
            let client = ATHClient(baseURL: url, did: agent, key: agentKey)
            let session = try await client.handshake(
                credential: credential, scopes: [scope], ttl: 7200, context: "bench proxy", confirmationWait: .seconds(5))
            let (path, seconds, scope) = (self.path, self.seconds, self.scope)
            let operation: @Sendable () async throws -> Int
            switch self.operation {
            case .request:
                operation = { try await session.get(path).status }
            case .handshake, .handshakeAndRequest:
                let request = self.operation == .handshakeAndRequest
                operation = {
                    let credential = try await UserCredential.issue(
                        user: DID.key(userKey.publicKey), key: userKey, client: agent, scopes: [scope], validFor: 7200)
                    let session = try await client.handshake(
                        credential: credential, scopes: [scope], ttl: 7200, context: "bench", confirmationWait: .seconds(5))
                    return request ? try await session.get(path).status : 200
                }
            }
            _ = try await Bench.load(seconds: 1, concurrency: concurrency) { _ in _ = try await operation() }

            // For a caller reading the server's CPU: the measured part starts now.
            print("measuring")
            fflush(nil)
            let latencies = Mutex<[Duration]>([])
            let clock = ContinuousClock()
            let cpu0 = Bench.cpuSeconds()
            let (done, elapsed) = try await Bench.load(seconds: seconds, concurrency: concurrency) { _ in
                let start = clock.now
                let status = try await operation()
                guard (200..<300).contains(status) else { throw ATHError(.internalError, "status \(status)") }
                let took = clock.now - start
                latencies.withLock { $0.append(took) }
            }
            let sorted = latencies.withLock { $0.sorted() }
            let ms = { (d: Duration) in Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15 }
            let at = { (q: Double) in sorted.isEmpty ? 0 : ms(sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))]) }
            print(
                String(
                    format: "requests: %d in %.2f s = %.0f/s; p50 %.2f ms, p99 %.2f ms; load generator CPU %.1f µs per operation", done,
                    elapsed, Double(done) / elapsed, at(0.5), at(0.99), (Bench.cpuSeconds() - cpu0) / Double(max(done, 1)) * 1e6))
        }
    }

    /// Live state for the caller to weigh: `grants` handshakes, each followed by one request (so
    /// the server caches its session); then it holds them until killed. Benchmarks/store/run.sh reads the server's memory and
    /// the database's sizes before and after.
    struct Hold: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make and hold live grants on a running gateway, for memory measurements.")
        @Option(help: "The gateway's base URL.") var url: String
        @Option(help: "A protected path to call once per grant.") var path: String
        @Option(help: "The scope the path needs.") var scope: String
        @Option(help: "Grants to make.") var grants: Int = 1000

        func run() async throws {
            let (agentKey, userKey) = (PrivateKey.generate(.es256), PrivateKey.generate(.es256))
            let agent = DID.key(agentKey.publicKey)
            let client = ATHClient(baseURL: url, did: agent, key: agentKey)
            let (path, scope, grants) = (self.path, self.scope, self.grants)
            // Eight agents' worth at once: the holding, not the making, is what is measured.
            let held = try await withThrowingTaskGroup(of: [ATHSession].self) { group in
                for worker in 0..<8 {
                    group.addTask {
                        var mine: [ATHSession] = []
                        for _ in stride(from: worker, to: grants, by: 8) {
                            let credential = try await UserCredential.issue(
                                user: DID.key(userKey.publicKey), key: userKey, client: agent, scopes: [scope], validFor: 7200)
                            let session = try await client.handshake(
                                credential: credential, scopes: [scope], ttl: 7200, context: "hold", confirmationWait: .seconds(5))
                            let status = try await session.get(path).status
                            guard (200..<300).contains(status) else { throw ATHError(.internalError, "status \(status) from \(path)") }
                            mine.append(session)
                        }
                        return mine
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            print("holding \(held.count) grants")
            fflush(nil)
            while true { try await Task.sleep(for: .seconds(3600)) }
        }
    }
}
