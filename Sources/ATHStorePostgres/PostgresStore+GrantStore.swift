import ATHCore
import ATHStore
import Foundation
import PostgresNIO

extension PostgresStore: GrantStore {
    public func grant(id: String) async throws -> Grant? {
        let row = try await read { c in
            try await c.rows("SELECT data, revoked_at FROM grant_record WHERE id = \(id)", self.logger).first.map {
                (try $0["data"].decode(String.self), try $0["revoked_at"].decode(Int64?.self))
            }
        }
        guard let row else { return nil }
        var grant = try StoredDocument.decode(Grant.self, row.0)
        grant.revoked = row.1 != nil
        return grant
    }

    public func session(id: String) async throws -> StoredSession? {
        try await read { c in
            try await c.rows("SELECT id, grant_id, sealed_proof_key, expires_at FROM session WHERE id = \(id)", self.logger).first.map {
                StoredSession(
                    id: try $0["id"].decode(String.self), grantID: try $0["grant_id"].decode(String.self),
                    sealedProofKey: Data(buffer: try $0["sealed_proof_key"].decode(ByteBuffer.self)), expiresAt: try $0["expires_at"].decode(Int64.self))
            }
        }
    }

    public func token(jti: String) async throws -> StoredToken? {
        try await read { c in try await Self.token(jti: jti, on: c, self.logger) }
    }

    static func token(jti: String, on c: PostgresConnection, _ logger: Logger) async throws -> StoredToken? {
        try await c.rows("SELECT jti, grant_id, session_id, issued_at, expires_at, revoked_at FROM token WHERE jti = \(jti)", logger).first.map {
            StoredToken(
                jti: try $0["jti"].decode(String.self), grantID: try $0["grant_id"].decode(String.self),
                sessionID: try $0["session_id"].decode(String.self), issuedAt: try $0["issued_at"].decode(Int64.self),
                expiresAt: try $0["expires_at"].decode(Int64.self), revokedAt: try $0["revoked_at"].decode(Int64?.self))
        }
    }

    public func renewToken(revoking old: String, with new: StoredToken, now: Int64, audit: [AuditEvent]) async throws -> Bool {
        try await transaction { c in
            // Two renewals of one token on two instances: the second waits for the first's row
            // lock, finds it revoked, and changes nothing.
            guard try await c.changed("UPDATE token SET revoked_at = \(now) WHERE jti = \(old) AND revoked_at IS NULL RETURNING 1", self.logger) == 1
            else { return false }
            try await c.query(
                """
                INSERT INTO token (jti, grant_id, session_id, issued_at, expires_at)
                VALUES (\(new.jti), \(new.grantID), \(new.sessionID), \(new.issuedAt), \(new.expiresAt))
                """, logger: self.logger)
            try await Self.notify(.token(jti: old, session: new.sessionID), on: c, self.logger)
            try await self.append(audit, on: c)
            return true
        }
    }

    public func revokeGrant(id: String, now: Int64, audit: [AuditEvent]) async throws -> Bool {
        try await transaction { c in
            guard try await c.value(Int32.self, "SELECT 1 FROM grant_record WHERE id = \(id)", self.logger) != nil else { return false }
            try await Self.revokeGrant(id, now: now, on: c, self.logger)
            try await Self.notify(.grants([id]), on: c, self.logger)
            try await self.append(audit, on: c)
            return true
        }
    }

    /// The grant and every token of it.
    static func revokeGrant(_ id: String, now: Int64, on c: PostgresConnection, _ logger: Logger) async throws {
        try await c.query("UPDATE grant_record SET revoked_at = \(now) WHERE id = \(id) AND revoked_at IS NULL", logger: logger)
        try await c.query("UPDATE token SET revoked_at = \(now) WHERE grant_id = \(id) AND revoked_at IS NULL", logger: logger)
    }

    /// Serializes a credential's revocation against a grant being made with it (SQLite's single
    /// writer does this there): both take this transaction-scoped lock first.
    static func lockCredential(_ jti: String, userDID: String, on c: PostgresConnection, _ logger: Logger) async throws {
        let key = "credential\n" + jti + "\n" + userDID
        try await c.query("SELECT pg_advisory_xact_lock(hashtextextended(\(key), 0))", logger: logger)
    }

    public func revokeCredential(jti: String, userDID: String, now: Int64, audit: @escaping @Sendable ([String]) -> [AuditEvent]) async throws
        -> [String]
    {
        try await revoke(credential: jti, userDID: userDID, now: now, audit: audit)
    }

    private func revoke(credential jti: String, userDID: String, now: Int64, audit: @escaping @Sendable ([String]) -> [AuditEvent]) async throws
        -> [String]
    {
        try await transaction { c in
            try await Self.lockCredential(jti, userDID: userDID, on: c, self.logger)
            try await c.query(
                "INSERT INTO revoked_credential (jti, user_did, revoked_at) VALUES (\(jti), \(userDID), \(now)) ON CONFLICT DO NOTHING",
                logger: self.logger)
            let rows = try await c.rows(
                "SELECT id, expires_at FROM grant_record WHERE credential_id = \(jti) AND user_did = \(userDID) AND revoked_at IS NULL ORDER BY id",
                self.logger
            ).map { (id: try $0["id"].decode(String.self), expiresAt: try $0["expires_at"].decode(Int64.self)) }
            for row in rows { try await Self.revokeGrant(row.id, now: now, on: c, self.logger) }
            // Expired grants are marked too, but only those still in force are reported as ended.
            let ended = rows.filter { $0.expiresAt > now }.map(\.id)
            try await Self.notify(.grants(rows.map(\.id)), on: c, self.logger)
            try await self.append(audit(ended), on: c)
            return ended
        }
    }

    public func isCredentialRevoked(jti: String, userDID: String) async throws -> Bool {
        try await read { c in try await Self.isCredentialRevoked(jti, userDID: userDID, on: c, self.logger) }
    }

    static func isCredentialRevoked(_ jti: String, userDID: String, on c: PostgresConnection, _ logger: Logger) async throws -> Bool {
        try await c.value(Int32.self, "SELECT 1 FROM revoked_credential WHERE jti = \(jti) AND user_did = \(userDID)", logger) != nil
    }

    public func credentials(userDID: String, now: Int64) async throws -> [CredentialUse] {
        try await read { c in
            let used = try await c.rows(
                """
                SELECT g.credential_id AS jti, g.client_did AS client_did, MIN(g.created_at) AS first_used_at, COUNT(*) AS grants,
                       SUM(CASE WHEN g.revoked_at IS NULL AND g.expires_at > \(now) THEN 1 ELSE 0 END) AS active_grants,
                       MIN(r.revoked_at) AS revoked_at
                FROM grant_record g LEFT JOIN revoked_credential r ON r.jti = g.credential_id AND r.user_did = g.user_did
                WHERE g.user_did = \(userDID) GROUP BY g.credential_id, g.client_did
                """, self.logger
            ).map {
                CredentialUse(
                    jti: try $0["jti"].decode(String.self), client_did: try $0["client_did"].decode(String.self),
                    first_used_at: try $0["first_used_at"].decode(Int64.self), grants: Int(try $0["grants"].decode(Int64.self)),
                    active_grants: Int(try $0["active_grants"].decode(Int64.self)), revoked_at: try $0["revoked_at"].decode(Int64?.self))
            }
            // Revoked before any use: listed too, so the user sees what they revoked.
            let seen = Set(used.map(\.jti))
            let unused = try await c.rows("SELECT jti, revoked_at FROM revoked_credential WHERE user_did = \(userDID)", self.logger)
                .map { (try $0["jti"].decode(String.self), try $0["revoked_at"].decode(Int64.self)) }
                .filter { !seen.contains($0.0) }
                .map { CredentialUse(jti: $0.0, client_did: "", first_used_at: 0, grants: 0, active_grants: 0, revoked_at: $0.1) }
            return (used + unused).sorted { ($0.first_used_at, $0.jti) > ($1.first_used_at, $1.jti) }
        }
    }

    public func revokeToken(jti: String, now: Int64, audit: @escaping @Sendable (StoredToken) -> [AuditEvent]) async throws -> StoredToken? {
        try await revoke(token: jti, now: now, audit: audit)
    }

    private func revoke(token jti: String, now: Int64, audit: @escaping @Sendable (StoredToken) -> [AuditEvent]) async throws -> StoredToken? {
        try await transaction { c in
            guard let token = try await Self.token(jti: jti, on: c, self.logger) else { return nil }
            try await c.query("UPDATE token SET revoked_at = \(now) WHERE jti = \(jti) AND revoked_at IS NULL", logger: self.logger)
            try await Self.notify(.token(jti: jti, session: token.sessionID), on: c, self.logger)
            try await self.append(audit(token), on: c)
            return token
        }
    }
}
