import ATHStorePostgres
import Foundation
import Logging
import PostgresNIO
import Testing

/// The PostgreSQL the tests use: the server named by `ATH_TEST_POSTGRES_URL` (`.ci/postgres-start`
/// starts one and prints its URL; `.ci/run` exports it), with a fresh database per test, dropped
/// at its end. Without the variable the tests that need it are skipped, saying so; with
/// `ATH_REQUIRE_POSTGRES=1` (CI) its absence fails the run instead.
enum TestPostgres {
    static var url: String? { ProcessInfo.processInfo.environment["ATH_TEST_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 } }
    static var available: Bool { url != nil }
    static let skipped: Comment = "needs PostgreSQL: set ATH_TEST_POSTGRES_URL (.ci/postgres-start prints one)"

    /// A new, empty database on the test server; `body` gets its URL; dropped afterwards.
    static func withDatabase<T>(_ body: (String) async throws -> T) async throws -> T {
        let (url, name) = try await createDatabase()
        do {
            let result = try await body(url)
            try await dropDatabase(name)
            return result
        } catch {
            try? await dropDatabase(name)
            throw error
        }
    }

    /// A new, empty database: its URL and its name (for `dropDatabase`).
    static func createDatabase() async throws -> (url: String, name: String) {
        let base = try #require(url, "ATH_TEST_POSTGRES_URL is not set")
        let name = "ath_test_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        try await admin(base) { try await $0.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: logger) }
        var components = try #require(URLComponents(string: base))
        components.path = "/" + name
        return (try #require(components.string), name)
    }

    /// A store on a new database of the test server, and the database's URL and name.
    static func openStore() async throws -> (store: PostgresStore, url: String, name: String) {
        let (url, name) = try await createDatabase()
        return (try await PostgresStore.open(url: url), url, name)
    }

    /// Closes a store `openStore` made and drops its database.
    static func release(_ store: PostgresStore, name: String) async {
        await store.close()
        try? await dropDatabase(name)
    }

    static func dropDatabase(_ name: String) async throws {
        let base = try #require(url, "ATH_TEST_POSTGRES_URL is not set")
        try await admin(base) { try await $0.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)"), logger: logger) }
    }

    static let logger = Logger(label: "ath.test.postgres")

    /// One connection to the server's maintenance database (CREATE and DROP DATABASE), or to
    /// `database`.
    static func admin(_ base: String, database: String = "postgres", _ body: (PostgresConnection) async throws -> Void) async throws {
        let components = try #require(URLComponents(string: base))
        let configuration = PostgresConnection.Configuration(
            host: try #require(components.host), port: components.port ?? 5432, username: try #require(components.user),
            password: components.password, database: database, tls: .disable)
        let connection = try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
        do {
            try await body(connection)
            try await connection.close()
        } catch {
            try? await connection.close()
            throw error
        }
    }
}

/// In CI the PostgreSQL tests never skip: `.ci/run` sets ATH_REQUIRE_POSTGRES=1 with the URL.
@Suite struct TestPostgresPresence {
    @Test func ciHasPostgreSQL() {
        if ProcessInfo.processInfo.environment["ATH_REQUIRE_POSTGRES"] == "1" {
            #expect(TestPostgres.available, "ATH_REQUIRE_POSTGRES=1 but ATH_TEST_POSTGRES_URL is not set")
        }
    }
}

/// The store a test runs on. Suites that hold for every backend take `Backend.available` as
/// their arguments: SQLite always, PostgreSQL when the test server is there.
enum Backend: String, Sendable, CustomTestStringConvertible {
    case sqlite, postgres

    static var available: [Backend] { TestPostgres.available ? [.sqlite, .postgres] : [.sqlite] }
    var testDescription: String { rawValue }
}
