import ATHStore
import PostgresNIO

extension PostgresStore: SingleUseValues {
    public func consumeNonce(_ key: String, expiresAt: Int64, now: Int64, audit: [AuditEvent]) async throws -> Bool {
        try await transaction { c in
            guard try await Self.consume(key, expiresAt: expiresAt, now: now, on: c, self.logger) else { return false }
            try await self.append(audit, on: c)
            return true
        }
    }

    /// One statement decides: a new key is inserted, an expired one taken over, a live one left
    /// alone (no row returned). A second instance inserting the same key at the same moment waits
    /// for the first's transaction and then sees its row: one of them wins, on any instance.
    static func consume(_ key: String, expiresAt: Int64, now: Int64, on c: PostgresConnection, _ logger: Logger) async throws -> Bool {
        try await c.changed("\(nonceUpsert: key, expiresAt: expiresAt, now: now)", logger) == 1
    }

    public func isNonceRecorded(_ key: String, now: Int64) async throws -> Bool {
        try await read { c in try await c.value(Int32.self, "SELECT 1 FROM nonce WHERE key = \(key) AND expires_at >= \(now)", self.logger) != nil }
    }
}

extension PostgresQuery.StringInterpolation {
    /// Records single-use value `key` until `expiresAt`, taking over an entry expired by `now`;
    /// returns a row only when the value was fresh. Alone (`consume`) or as the first CTE of a
    /// statement that does more only when it returned a row (step 1).
    /// `unless`: an SQL expression that, when true, records nothing (and returns no row).
    mutating func appendInterpolation(nonceUpsert key: String, expiresAt: Int64, now: Int64, unless refusal: String? = nil) {
        appendLiteral("INSERT INTO nonce (key, expires_at) SELECT ")
        appendInterpolation(key)
        appendLiteral(", ")
        appendInterpolation(expiresAt)
        if let refusal { appendLiteral(" WHERE NOT \(refusal)") }
        appendLiteral(" ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE nonce.expires_at < ")
        appendInterpolation(now)
        appendLiteral(" RETURNING 1")
    }
}
