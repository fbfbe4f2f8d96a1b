import ATHCore
import ATHStore
import Foundation
import PostgresNIO

extension PostgresStore: HandshakeStore {
    /// One statement: the nonce's upsert (`consume`'s), and only when it was fresh the
    /// handshake and its audit records.
    public func beginHandshake(_ handshake: ServerHandshake, nonce: String, nonceExpiresAt: Int64, now: Int64, audit: [AuditEvent])
        async throws -> Bool
    {
        let data = try StoredDocument.encode(handshake)
        let client = handshake.clientDID.value
        let row = try await statement { c in
            try await c.query(
                """
                WITH suspended AS MATERIALIZED (SELECT \(accountSuspended: client) AS yes),
                fresh AS (\(nonceUpsert: nonce, expiresAt: nonceExpiresAt, now: now, unless: "(SELECT yes FROM suspended)")),
                begun AS (
                    INSERT INTO handshake (id, state, client_did, user_did, request_id, deadline, revision, data)
                    SELECT \(handshake.id), \(handshake.state.rawValue), \(client), NULL, NULL, \(handshake.deadline), 0,
                        \(data)
                    FROM fresh),
                audit AS (INSERT INTO audit_outbox \(outboxRows: audit, when: "fresh"))
                SELECT (SELECT yes FROM suspended), (SELECT count(*) FROM fresh)
                """, logger: self.logger
            ).collect().first
        }
        let (suspended, begun) = try row?.decode((Bool, Int64).self) ?? (false, Int64(0))
        if suspended { throw ATHError.suspended(client.prefix(256), step: 3) }
        let fresh = begun == 1
        if fresh { appended(audit) }
        return fresh
    }

    public func purge(handshakesEndedBefore endedBefore: Int64, now: Int64) async throws -> PurgedRecords {
        var purged = try await transaction { c in
            // A handshake's deadline is when it ended at the latest: a refusal ends it earlier.
            let handshakes = try await c.changed(
                """
                DELETE FROM handshake h WHERE state != 'completed' AND deadline < \(endedBefore)
                AND NOT EXISTS (SELECT 1 FROM grant_record g WHERE g.handshake_id = h.id) RETURNING 1
                """, self.logger)
            let nonces = try await c.changed("DELETE FROM nonce WHERE expires_at < \(now) RETURNING 1", self.logger)
                + c.changed("DELETE FROM proof_nonce WHERE expires_at < \(now) RETURNING 1", self.logger)
            // Counters of windows that ended over two days ago (a day is the longest window).
            try await c.query("DELETE FROM rate_counter WHERE window_start < \(now - 2 * 86_400)", logger: self.logger)
            return PurgedRecords(handshakes: handshakes, grants: 0, nonces: nonces)
        }
        // Ended grants a batch per transaction, with what hangs off them; the foreign keys are
        // checked at the statement's end, when all of it is gone.
        while true {
            let batch = try await transaction { c in
                try await c.changed(
                    """
                    WITH ended AS (
                        SELECT id, handshake_id FROM grant_record WHERE expires_at < \(endedBefore)
                        UNION SELECT id, handshake_id FROM grant_record WHERE revoked_at < \(endedBefore) LIMIT \(PurgedRecords.batch)),
                    tokens AS (DELETE FROM token WHERE grant_id IN (SELECT id FROM ended)),
                    sessions AS (DELETE FROM session WHERE grant_id IN (SELECT id FROM ended)),
                    grants AS (DELETE FROM grant_record WHERE id IN (SELECT id FROM ended) RETURNING handshake_id)
                    DELETE FROM handshake WHERE id IN (SELECT handshake_id FROM grants) RETURNING 1
                    """, self.logger)
            }
            purged.grants += batch
            purged.handshakes += batch
            if batch < PurgedRecords.batch { return purged }
        }
    }

    public func handshake(id: String) async throws -> StoredHandshake? {
        try await loadHandshake("SELECT data, revision FROM handshake WHERE id = \(id)")
    }

    public func handshake(requestID: String) async throws -> StoredHandshake? {
        try await loadHandshake("SELECT data, revision FROM handshake WHERE request_id = \(requestID)")
    }

    public func handshakeRevision(id: String) async throws -> Int? {
        try await read { c in try await c.value(Int32.self, "SELECT revision FROM handshake WHERE id = \(id)", self.logger).map(Int.init) }
    }

    private func loadHandshake(_ query: PostgresQuery) async throws -> StoredHandshake? {
        let row = try await read { c in
            try await c.rows(query, self.logger).first.map { (try $0["data"].decode(String.self), try $0["revision"].decode(Int32.self)) }
        }
        guard let row else { return nil }
        return StoredHandshake(handshake: try StoredDocument.decode(ServerHandshake.self, row.0), revision: Int(row.1))
    }

    public func pendingConfirmations(userDID: String, now: Int64) async throws -> [ServerHandshake] {
        let state = ServerHandshake.State.awaitingConfirmation.rawValue
        let rows = try await read { c in
            try await c.values(
                String.self,
                "SELECT data FROM handshake WHERE user_did = \(userDID) AND state = \(state) AND deadline >= \(now) ORDER BY deadline, id",
                self.logger)
        }
        return try rows.map { try StoredDocument.decode(ServerHandshake.self, $0) }
    }

    /// The revision check is the UPDATE's own condition: of two instances applying a message to
    /// one handshake, the second waits for the first's row lock, finds the revision moved, and
    /// changes nothing (UNEXPECTED_MESSAGE). A change that ends the wait for the user's answer
    /// is announced on `ath_handshake` by the same statement, delivered at commit. The change, and
    /// with a completion the grant, session and token, and the audit records, are one statement
    /// (one round trip): the audit and the rows hang off the UPDATE's returned row.
    public func updateHandshake(
        _ handshake: ServerHandshake, expectedRevision: Int, completion: ServerHandshake.Completion?, sealedProofKey: Data?,
        audit: [AuditEvent]
    ) async throws {
        if completion != nil && sealedProofKey == nil {
            throw ATHError(.internalError, "a completed handshake needs its sealed proof key")
        }
        let data = try StoredDocument.encode(handshake)
        let grantData = try completion.map { try StoredDocument.encode($0.grant) }
        guard let completion, let grantData, let sealedProofKey else {
            let changed = try await statement { c in
                try await c.value(
                    Int64.self, "WITH changed AS (\(update: handshake, data: data, at: expectedRevision)), audit AS (INSERT INTO audit_outbox \(outboxRows: audit, when: "changed")) SELECT count(*) FROM changed",
                    self.logger)
            }
            guard changed == 1 else { throw ATHError.handshakeChangedConcurrently }
            appended(audit)
            return
        }
        let g = completion.grant
        let t = completion.token
        // Checked by the statement that writes the grant (`ath_grant_refusal`, evaluated before
        // the UPDATE may apply), under the locks a revocation or a suspension takes, so one
        // landing meanwhile cannot be missed: the credential's lock is taken first, and the
        // reads after it see what its holder committed.
        let row = try await statement { c in
            try await c.query(
                """
                WITH verdict AS MATERIALIZED (
                    SELECT ath_grant_refusal(\(g.credentialID), \(g.userDID.value), \([g.clientDID.value, g.userDID.value])) AS refusal),
                changed AS (\(update: handshake, data: data, at: expectedRevision, unless: "(SELECT refusal FROM verdict)")),
                grant_row AS (
                    INSERT INTO grant_record (id, handshake_id, client_did, user_did, credential_id, data, created_at, expires_at)
                    SELECT \(g.id), \(g.handshakeID), \(g.clientDID.value), \(g.userDID.value), \(g.credentialID), \(grantData),
                        \(g.createdAt), \(g.expiresAt) FROM changed),
                session_row AS (
                    INSERT INTO session (id, grant_id, sealed_proof_key, expires_at)
                    SELECT \(completion.session.sessionID), \(g.id), \(ByteBuffer(bytes: sealedProofKey)), \(g.expiresAt) FROM changed),
                token_row AS (
                    INSERT INTO token (jti, grant_id, session_id, issued_at, expires_at)
                    SELECT \(t.jti), \(g.id), \(t.sid), \(t.iat), \(t.exp) FROM changed),
                audit AS (INSERT INTO audit_outbox \(outboxRows: audit, when: "changed"))
                SELECT (SELECT refusal FROM verdict), (SELECT count(*) FROM changed)
                """, logger: self.logger
            ).collect().first
        }
        let (refusal, changed) = try row?.decode((String?, Int64).self) ?? (nil, Int64(0))
        if refusal == "revoked" { throw ATHError.revokedCredential(step: 8) }
        if let refusal, refusal.hasPrefix("suspended:") { throw ATHError.suspended(refusal.dropFirst("suspended:".count), step: 8) }
        guard refusal == nil else { throw ATHError(.internalError, "unknown grant refusal from the database") }
        guard changed == 1 else { throw ATHError.handshakeChangedConcurrently }
        appended(audit)
    }

    static let handshakeChannel = "ath_handshake"

    /// The states an agent waiting on the user's answer is woken for.
    static func endsTheWait(_ state: ServerHandshake.State) -> Bool { [.readyToComplete, .completed, .failed].contains(state) }
}

extension PostgresStore: HandshakeChangeFeed {
    public func handshakeChanges() -> AsyncStream<String> {
        notifications(on: Self.handshakeChannel) { $0 }
    }
}

extension PostgresQuery.StringInterpolation {
    /// The check-and-set UPDATE of a stored handshake: it applies only at `expectedRevision`, and
    /// returns a row when it did. A change that ends the wait for the user's answer is announced
    /// on `ath_handshake` by the same statement (`pg_notify`, delivered at commit).
    /// `unless`: an SQL expression that, when not NULL, stops the change (a refusal to report).
    mutating func appendInterpolation(update h: ServerHandshake, data: String, at expectedRevision: Int, unless refusal: String? = nil) {
        appendLiteral("UPDATE handshake SET state = ")
        appendInterpolation(h.state.rawValue)
        appendLiteral(", user_did = ")
        appendInterpolation(h.scopeRequest?.userDID.value)
        appendLiteral(", request_id = ")
        appendInterpolation(h.confirmation?.request_id)
        appendLiteral(", deadline = ")
        appendInterpolation(h.deadline)
        appendLiteral(", revision = revision + 1, data = ")
        appendInterpolation(data)
        appendLiteral(" WHERE id = ")
        appendInterpolation(h.id)
        appendLiteral(" AND revision = ")
        appendInterpolation(Int32(clamping: expectedRevision))
        if let refusal { appendLiteral(" AND \(refusal) IS NULL") }
        let announced = PostgresStore.endsTheWait(h.state) ? "pg_notify('\(PostgresStore.handshakeChannel)', id)" : "1"
        appendLiteral(" RETURNING \(announced)")
    }
}
