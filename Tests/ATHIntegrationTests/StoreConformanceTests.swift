import ATHCore
import ATHStore
import ATHStorePostgres
import ATHStoreSQLite
import Foundation
import Testing

/// What every backend of an aggregate must do, written once and run against SQLite and
/// PostgreSQL alike. "Instances" are several store objects on one database, as several
/// servers would hold: what one records, every other sees.
enum StoreConformance {
    typealias Store = SingleUseValues & AuditLog

    static func singleUseValues(_ store: some Store) async throws {
        let key = "proof:" + Nonce.generate()
        #expect(try await !store.isNonceRecorded(key, now: 100))
        let audit = [AuditEvent(at: 100, event: "test.used", actor: "a", subject: key, outcome: "ok")]
        #expect(try await store.consumeNonce(key, expiresAt: 200, now: 100, audit: audit))
        #expect(try await store.isNonceRecorded(key, now: 150))
        #expect(try await store.isNonceRecorded(key, now: 200), "recorded up to and including its expiry")
        // A second use before expiry: refused, and its audit records are not written.
        let before = try await store.auditEvents(limit: 1000).count
        #expect(try await !store.consumeNonce(key, expiresAt: 300, now: 199, audit: audit))
        #expect(try await store.auditEvents(limit: 1000).count == before)
        // After expiry the value may be used again (the table does not grow without bound).
        #expect(try await !store.isNonceRecorded(key, now: 201))
        #expect(try await store.consumeNonce(key, expiresAt: 400, now: 201))
        #expect(try await !store.consumeNonce(key, expiresAt: 400, now: 300))
    }

    /// Many consumers of one key on several instances at once: exactly one wins.
    static func oneWinnerAcrossInstances(_ instances: [any Store]) async throws {
        for _ in 0..<5 {
            let key = "jti:" + Nonce.generate()
            let wins = try await withThrowingTaskGroup(of: Bool.self) { group in
                for i in 0..<16 {
                    let store = instances[i % instances.count]
                    group.addTask { try await store.consumeNonce(key, expiresAt: 1000, now: 1) }
                }
                return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            #expect(wins == 1)
        }
    }

    /// Appends from several instances at once form one gapless, verifiable chain.
    static func oneChainAcrossInstances(_ instances: [any Store]) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<24 {
                let store = instances[i % instances.count]
                group.addTask {
                    let events = (0..<(1 + i % 3)).map { AuditEvent(at: Int64(i), event: "test.append", actor: "instance-\(i)", subject: "\($0)", outcome: "ok") }
                    if i % 2 == 0 {
                        try await store.appendAudit(events)
                    } else {
                        _ = try await store.consumeNonce("k-\(i)-" + Nonce.generate(), expiresAt: 10, now: 1, audit: events)
                    }
                }
            }
            try await group.waitForAll()
        }
        let records = try await instances[0].auditRecords(after: 0, limit: 1000)
        let sequences: [Int64] = records.map(\.sequence)
        let expected: [Int64] = Array(1...Int64(records.count))
        #expect(sequences == expected, "gapless")
        let appended: Int = (0..<24).map { 1 + $0 % 3 }.reduce(0, +)
        #expect(records.count == appended)
        let verified = try await AuditChain.verify(instances[instances.count - 1])
        #expect(verified.brokenAt == nil, "\(verified)")
        // The newest-first window reads the same records.
        #expect(try await instances[1 % instances.count].auditEvents(limit: 5) == Array(records.suffix(5)))
    }
}

@Suite struct StoreConformanceTests {
    static func sqlite(instances: Int) throws -> [SQLiteStore] {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ath-conformance-\(UUID().uuidString).sqlite").path
        return try (0..<instances).map { _ in try SQLiteStore(path: path) }
    }

    @Test func sqliteSingleUseValues() async throws {
        try await StoreConformance.singleUseValues(try Self.sqlite(instances: 1)[0])
    }

    @Test func sqliteAcrossInstances() async throws {
        let stores = try Self.sqlite(instances: 3)
        try await StoreConformance.oneWinnerAcrossInstances(stores)
        try await StoreConformance.oneChainAcrossInstances(stores)
    }

    @Test(.enabled(if: TestPostgres.available, TestPostgres.skipped)) func postgresSingleUseValues() async throws {
        try await TestPostgres.withDatabase { url in
            let store = try await PostgresStore.open(url: url)
            try await StoreConformance.singleUseValues(store)
            await store.close()
        }
    }

    @Test(.enabled(if: TestPostgres.available, TestPostgres.skipped)) func postgresAcrossInstances() async throws {
        try await TestPostgres.withDatabase { url in
            // Three instances opening one new database together: the schema is applied once.
            let stores = try await withThrowingTaskGroup(of: PostgresStore.self) { group in
                for _ in 0..<3 { group.addTask { try await PostgresStore.open(url: url) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            try await StoreConformance.oneWinnerAcrossInstances(stores)
            try await StoreConformance.oneChainAcrossInstances(stores)
            for store in stores { await store.close() }
        }
    }

    /// A database that cannot be reached stops the start with a clear, retryable error that names
    /// it without its password, after the operation timeout, not a hang.
    @Test func anUnreachableDatabaseIsNamedAtStart() async throws {
        var configuration = try PostgresStoreConfiguration(url: "postgres://ath:s3cret@127.0.0.1:1/ath?sslmode=disable")
        configuration.operationTimeout = .seconds(2)
        do {
            _ = try await PostgresStore.open(configuration)
            Issue.record("opened a database on a closed port")
        } catch StoreError.unavailable(let why) {
            #expect(why.contains("postgres://ath@127.0.0.1:1/ath") && !why.contains("s3cret"), "\(why)")
        }
    }

    /// Proof nonces across instances: within a batch and between batches racing on several
    /// instances, each key is granted once.
    @Test(.enabled(if: TestPostgres.available, TestPostgres.skipped)) func postgresSharedProofNonces() async throws {
        try await TestPostgres.withDatabase { url in
            let (a, b) = (try await PostgresStore.open(url: url), try await PostgresStore.open(url: url))
            let first = try await a.recordProofNonces(
                [ProofNonce(key: "k1", expiresAt: 100), ProofNonce(key: "k2", expiresAt: 100), ProofNonce(key: "k1", expiresAt: 100)], now: 10)
            #expect(first == [true, true, false], "a key twice in one batch: the second is a replay")
            #expect(try await b.recordProofNonces([ProofNonce(key: "k2", expiresAt: 100), ProofNonce(key: "k3", expiresAt: 100)], now: 20) == [false, true])
            #expect(try await b.recordProofNonces([ProofNonce(key: "k1", expiresAt: 300)], now: 101) == [true], "expired: usable again")
            let keys = (0..<50).map { "race-\($0)" }
            let granted = try await withThrowingTaskGroup(of: [Bool].self) { group in
                for store in [a, b, a, b] {
                    group.addTask { try await store.recordProofNonces(keys.shuffled().map { ProofNonce(key: $0, expiresAt: 500) }, now: 30) }
                }
                return try await group.reduce(0) { $0 + $1.filter { $0 }.count }
            }
            #expect(granted == keys.count, "each key once, whichever instance's batch won it")
            await a.close()
            await b.close()
        }
    }

    /// Rate counters: every instance's counts add up, a batch may name a counter twice, and the
    /// previous window's total comes back with the current one.
    @Test(.enabled(if: TestPostgres.available, TestPostgres.skipped)) func postgresSharedRateCounters() async throws {
        try await TestPostgres.withDatabase { url in
            let (a, b) = (try await PostgresStore.open(url: url), try await PostgresStore.open(url: url))
            #expect(try await a.addRateCounts([RateCount(key: "g", windowStart: 60, window: 60, add: 3)]) == [RateTotals(current: 3, previous: 0)])
            let both = try await b.addRateCounts([
                RateCount(key: "g", windowStart: 60, window: 60, add: 2), RateCount(key: "g", windowStart: 60, window: 60, add: 1),
                RateCount(key: "g", windowStart: 120, window: 60, add: 0),
            ])
            #expect(both == [RateTotals(current: 6, previous: 0), RateTotals(current: 6, previous: 0), RateTotals(current: 0, previous: 6)])
            let racing = try await withThrowingTaskGroup(of: Void.self) { group in
                for store in [a, b, a, b] {
                    group.addTask { _ = try await store.addRateCounts((0..<20).map { RateCount(key: "k\($0 % 5)", windowStart: 0, window: 60, add: 1) }) }
                }
                try await group.waitForAll()
                return try await a.addRateCounts((0..<5).map { RateCount(key: "k\($0)", windowStart: 0, window: 60, add: 0) })
            }
            #expect(racing.map(\.current) == [16, 16, 16, 16, 16], "four batches of four counts each, for each key")
            await a.close()
            await b.close()
        }
    }

    @Test func databaseURLs() throws {
        let remote = try PostgresStoreConfiguration(url: "postgresql://svc:p%40ss@db.internal:6432/ath")
        #expect(remote.host == "db.internal" && remote.port == 6432 && remote.username == "svc" && remote.password == "p@ss")
        #expect(remote.database == "ath" && remote.tls == .require, "a remote host gets TLS unless the URL says otherwise")
        #expect(try PostgresStoreConfiguration(url: "postgres://a@localhost/x").tls == .prefer)
        #expect(try PostgresStoreConfiguration(url: "postgres://a@db/x?sslmode=disable").tls == .disable)
        for bad in ["mysql://a@h/x", "postgres://h/x", "postgres://a@h/x?sslmode=sometimes", "postgres://a@h:0/x"] {
            #expect(throws: InvalidDatabaseURL.self, "\(bad)") { try PostgresStoreConfiguration(url: bad) }
        }
    }
}
