import ATHStore
import PostgresNIO

/// One statement for a whole batch: the keys that come back were inserted (new, or taking an
/// expired row's place); the others were used already, here or on another instance. Keys go in
/// sorted, so that two instances' batches lock shared rows in one order and never deadlock.
extension PostgresStore: SharedProofNonces {
    public func recordProofNonces(_ nonces: [ProofNonce], now: Int64) async throws -> [Bool] {
        guard !nonces.isEmpty else { return [] }
        var latest: [String: Int64] = [:]
        for nonce in nonces { latest[nonce.key] = max(latest[nonce.key] ?? nonce.expiresAt, nonce.expiresAt) }
        let keys = latest.keys.sorted()
        let expiries = keys.map { latest[$0]! }
        let inserted = Set(
            try await read { c in
                try await c.values(
                    String.self,
                    """
                    INSERT INTO proof_nonce (key, expires_at) SELECT * FROM unnest(\(keys)::text[], \(expiries)::bigint[])
                    ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE proof_nonce.expires_at < \(now)
                    RETURNING key
                    """, self.logger)
            })
        // A key twice in one batch: its first request has it, the second is a replay.
        var granted: Set<String> = []
        return nonces.map { nonce in
            guard inserted.contains(nonce.key), !granted.contains(nonce.key) else { return false }
            granted.insert(nonce.key)
            return true
        }
    }
}
