import Logging
import PostgresNIO

/// The schema, as an ordered list of named steps applied once each. Instances that start
/// together on one database would race to apply the same step; the whole run holds a
/// transaction-scoped advisory lock, so the second waits and then finds the steps applied.
/// PostgreSQL's DDL is transactional: a step that fails leaves nothing behind.
enum PostgresMigrations {
    /// `pg_advisory_xact_lock` key for the migration run ("ATHM" in ASCII).
    static let lock: Int64 = 0x4154_484D

    static let steps: [(name: String, statements: [String])] = [
        (
            "v1-single-use-values",
            [
                "CREATE TABLE nonce (key TEXT PRIMARY KEY, expires_at BIGINT NOT NULL)",
                "CREATE INDEX nonce_expiry ON nonce (expires_at)",
            ]
        ),
        (
            "v1-audit",
            [
                """
                CREATE TABLE audit (
                    seq BIGINT PRIMARY KEY, at BIGINT NOT NULL, event TEXT NOT NULL, actor TEXT NOT NULL, subject TEXT NOT NULL,
                    outcome TEXT NOT NULL, detail TEXT NOT NULL, hash TEXT NOT NULL)
                """
            ]
        ),
    ]

    /// Applies the steps not yet applied, inside the caller's transaction.
    static func apply(on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query("SELECT pg_advisory_xact_lock(\(lock))", logger: logger)
        try await connection.query(
            "CREATE TABLE IF NOT EXISTS ath_schema_migration (name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            logger: logger)
        var applied: Set<String> = []
        for try await name in try await connection.query("SELECT name FROM ath_schema_migration", logger: logger).decode(String.self) {
            applied.insert(name)
        }
        for step in steps where !applied.contains(step.name) {
            for statement in step.statements {
                try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
            }
            try await connection.query("INSERT INTO ath_schema_migration (name) VALUES (\(step.name))", logger: logger)
            logger.info("applied schema step \(step.name)")
        }
    }
}
