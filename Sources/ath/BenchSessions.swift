import ATHAgent
import ATHCore
import ATHServer
import ArgumentParser
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

extension Bench {
    /// What the server keeps in memory per session in use: its caches' entries (the session's
    /// state, the verified token) and the proof nonce of its request. Measured in one process
    /// from its resident memory after `malloc_trim` (glibc's heap statistics are not in Swift's
    /// Glibc module): the sessions are all
    /// made first, then each used once, so the growth over the uses is the server's entries, not
    /// the handshakes' garbage or the agents' own objects.
    struct Sessions: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The server's memory per live session, from the heap.")
        @Option(help: "Sessions to make and use.") var count: Int = 4_000

        func run() async throws {
            let dir = try Bench.tempDir()
            defer { try? FileManager.default.removeItem(at: dir) }
            let platform = try await Bench.platform(store: dir)
            let count = self.count
            let made = try await withThrowingTaskGroup(of: [ATHSession].self) { group in
                for worker in 0..<8 {
                    group.addTask {
                        var mine: [ATHSession] = []
                        for _ in stride(from: worker, to: count, by: 8) { mine.append(try await platform.handshake()) }
                        return mine
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            // Each session used once (its state and token are cached: what a live session costs,
            // with one request's proof nonce), then once more (only the second nonce is new: what a
            // request alone costs, to take out of the first).
            // The rows the first requests read (session, grant, token), read before, by as many
            // tasks at once as the requests: each of the pool's reader connections then holds
            // its page cache full (bounded, 2 MB each), and that growth is not counted as the
            // sessions'. Read once and one at a time, it was: 4.5 kB per session at 4,000
            // sessions, 2.8 kB at 12,000.
            let store = platform.service.store
            for _ in 0..<2 {
                try await Self.eachInEightTasks(made) { session in
                    let grant = await session.grant
                    let token = try JWTCodec.unverifiedClaims(of: grant.accessToken, as: AccessTokenClaims.self, error: .tokenInvalid)
                    _ = try await store.session(id: grant.secrets.sessionID)
                    _ = try await store.grant(id: grant.grantID)
                    _ = try await store.token(jti: token.jti)
                }
            }
            let held0 = platform.service.liveSessionCount
            var readings = [Self.heapBytes()]
            for _ in 0..<2 {
                try await Self.eachInEightTasks(made) { session in
                    let status = try await session.get("/api/goods?keyword=phone").status
                    guard status == 200 else { throw ATHError(.internalError, "status \(status)") }
                }
                readings.append(Self.heapBytes())
            }
            let held = platform.service.liveSessionCount - held0
            let first = (readings[1] - readings[0]) / max(held, 1)
            let again = (readings[2] - readings[1]) / max(held, 1)
            print("made \(made.count) sessions and used each twice; the server holds \(held) live sessions")
            print("resident memory after malloc_trim: \(first) B per session at its first request, \(again) B at its second")
            print("per live session, without its requests' proof nonces: \(first - again) B")
            await platform.server.stop()
        }

        /// `body` on every session, by eight tasks at once (as the sessions were made): the warm-up
        /// and the measured passes go through the store's connections alike.
        static func eachInEightTasks(_ sessions: [ATHSession], _ body: @escaping @Sendable (ATHSession) async throws -> Void) async throws {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<8 {
                    group.addTask {
                        for i in stride(from: worker, to: sessions.count, by: 8) { try await body(sessions[i]) }
                    }
                }
                try await group.waitForAll()
            }
        }

        /// The process's resident bytes once the C heap gave back what it could (`malloc_trim`):
        /// the growth between two readings is what was kept, not what the allocator holds free.
        static func heapBytes() -> Int {
            // glibc's malloc_trim, which Swift's Glibc module does not import.
            if let trim = dlsym(nil, "malloc_trim") {
                _ = unsafeBitCast(trim, to: (@convention(c) (Int) -> Int32).self)(0)
            }
            let statm = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8)) ?? ""
            let pages = statm.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
            return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
        }
    }
}
