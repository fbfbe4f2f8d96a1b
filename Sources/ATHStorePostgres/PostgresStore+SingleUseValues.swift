import ATHStore
import PostgresNIO

extension PostgresStore: SingleUseValues {
    /// One statement decides: a new key is inserted, an expired one taken over, a live one left
    /// alone (no row returned). A second instance inserting the same key at the same moment waits
    /// for the first's transaction and then sees its row: one of them wins, on any instance.
    public func consumeNonce(_ key: String, expiresAt: Int64, now: Int64, audit: [AuditEvent]) async throws -> Bool {
        try await transaction { connection in
            let rows = try await connection.query(
                """
                INSERT INTO nonce (key, expires_at) VALUES (\(key), \(expiresAt))
                ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE nonce.expires_at < \(now)
                RETURNING 1
                """, logger: self.logger
            ).collect()
            guard !rows.isEmpty else { return false }
            try await Self.append(audit, on: connection, logger: self.logger)
            return true
        }
    }

    public func isNonceRecorded(_ key: String, now: Int64) async throws -> Bool {
        try await read { connection in
            try await !connection.query("SELECT 1 FROM nonce WHERE key = \(key) AND expires_at >= \(now)", logger: self.logger).collect().isEmpty
        }
    }
}
