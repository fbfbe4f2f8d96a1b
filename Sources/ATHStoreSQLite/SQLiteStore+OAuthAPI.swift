import ATHCore
import ATHStore
import Foundation
import GRDB

extension SQLiteStore: OAuthAPIStore {
    public func register(_ registration: AgentRegistration, audit: [AuditEvent]) async throws {
        let data = try StoredDocument.encode(registration)
        try await writes.write { db in
            guard try Bool.fetchOne(db, cached: "SELECT 1 FROM oauth_agent WHERE agent_id = ?", arguments: [registration.agentID]) == nil else {
                throw StoreError.duplicate("agent \(registration.agentID) is already registered")
            }
            try db.execute(cached: "INSERT INTO oauth_agent (client_id, agent_id, data) VALUES (?, ?, ?)",
                arguments: [registration.clientID, registration.agentID, data])
            try Self.append(audit, in: db)
        }
    }

    public func registration(clientID: String) async throws -> AgentRegistration? {
        let data = try await db.read { db in try String.fetchOne(db, cached: "SELECT data FROM oauth_agent WHERE client_id = ?", arguments: [clientID]) }
        return try data.map { try StoredDocument.decode(AgentRegistration.self, $0) }
    }

    public func beginAuthorization(_ session: AuthorizationSession, audit: [AuditEvent]) async throws {
        let data = try StoredDocument.encode(session)
        try await writes.write { db in
            try db.execute(cached: "INSERT INTO oauth_session (id, provider_state, client_id, status, expires_at, data) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [session.id, session.providerState, session.clientID, session.status.rawValue, session.expiresAt, data])
            try Self.append(audit, in: db)
        }
    }

    public func authorizationSession(id: String) async throws -> AuthorizationSession? {
        try await loadSession(sql: "SELECT data FROM oauth_session WHERE id = ?", id)
    }

    public func authorizationSession(providerState: String) async throws -> AuthorizationSession? {
        try await loadSession(sql: "SELECT data FROM oauth_session WHERE provider_state = ?", providerState)
    }

    private func loadSession(sql: String, _ key: String) async throws -> AuthorizationSession? {
        let data = try await db.read { db in try String.fetchOne(db, cached: sql, arguments: [key]) }
        return try data.map { try StoredDocument.decode(AuthorizationSession.self, $0) }
    }

    public func bindAuthorization(id: String, bindingDigest: String, now: Int64, audit: [AuditEvent]) async throws -> Bool {
        try await writes.write { db in
            guard let text = try String.fetchOne(
                db, cached: "SELECT data FROM oauth_session WHERE id = ? AND status = 'pending' AND expires_at > ?", arguments: [id, now])
            else { return false }
            var session = try StoredDocument.decode(AuthorizationSession.self, text)
            guard session.bindingDigest == nil else { return false }
            session.bindingDigest = bindingDigest
            try db.execute(cached: "UPDATE oauth_session SET data = ? WHERE id = ?", arguments: [try StoredDocument.encode(session), id])
            try Self.append(audit, in: db)
            return true
        }
    }

    public func finishAuthorization(_ finished: AuthorizationSession, sealedGrant: Data?, now: Int64, audit: [AuditEvent]) async throws -> Bool {
        let data = try StoredDocument.encode(finished)
        return try await writes.write { db in
            try db.execute(cached: """
                    UPDATE oauth_session SET status = ?, data = ?, sealed_grant = ?
                    WHERE id = ? AND status = 'pending' AND expires_at > ?
                    """,
                arguments: [finished.status.rawValue, data, sealedGrant, finished.id, now])
            guard db.changesCount == 1 else { return false }
            try Self.append(audit, in: db)
            return true
        }
    }

    public func redeemAuthorization(id: String, issuing token: IssuedAccessToken, now: Int64, audit: [AuditEvent]) async throws -> Bool {
        let tokenData = try StoredDocument.encode(token)
        return try await writes.write { db in
            guard let text = try String.fetchOne(
                db, cached: "SELECT data FROM oauth_session WHERE id = ? AND status = 'completed' AND expires_at > ?", arguments: [id, now])
            else { return false }
            var session = try StoredDocument.decode(AuthorizationSession.self, text)
            session.status = .redeemed
            try db.execute(cached: "UPDATE oauth_session SET status = 'redeemed', data = ? WHERE id = ?", arguments: [try StoredDocument.encode(session), id])
            try db.execute(cached: "INSERT INTO oauth_token (digest, client_id, session_id, expires_at, revoked_at, data) VALUES (?, ?, ?, ?, NULL, ?)",
                arguments: [token.digest, token.clientID, token.sessionID, token.expiresAt, tokenData])
            try Self.append(audit, in: db)
            return true
        }
    }

    public func issuedTokenAndGrant(digest: String) async throws -> (token: IssuedAccessToken, sealedGrant: Data?)? {
        try await db.read { db in
            let row = try Row.fetchOne(
                db.cachedStatement(
                    sql: """
                        SELECT t.data, t.revoked_at, s.sealed_grant FROM oauth_token t
                        LEFT JOIN oauth_session s ON s.id = t.session_id AND s.status IN ('completed', 'redeemed')
                        WHERE t.digest = ?
                        """), arguments: [digest])
            guard let row else { return nil }
            return (try Self.issuedToken(row), row["sealed_grant"])
        }
    }

    public func issuedTokenRevocation(digest: String) async throws -> TokenStanding {
        try await db.read { db in
            let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT revoked_at FROM oauth_token WHERE digest = ?"), arguments: [digest])
            guard let row else { return .gone }
            let at: Int64? = row["revoked_at"]
            return at == nil ? .active : .revoked
        }
    }

    static func issuedToken(digest: String, in db: Database) throws -> IssuedAccessToken? {
        try Row.fetchOne(db, cached: "SELECT data, revoked_at FROM oauth_token WHERE digest = ?", arguments: [digest]).map(issuedToken)
    }

    /// A token from its row's `data` and `revoked_at` (the revocation is a column of its own,
    /// set without rewriting the document).
    static func issuedToken(_ row: Row) throws -> IssuedAccessToken {
        var token = try StoredDocument.decode(IssuedAccessToken.self, row["data"])
        token.revokedAt = row["revoked_at"]
        return token
    }

    public func revokeIssuedToken(
        digest: String, clientID: String?, now: Int64, audit: @escaping @Sendable (IssuedAccessToken) -> [AuditEvent]
    ) async throws -> IssuedAccessToken? {
        try await writes.write { db in
            guard let token = try Self.issuedToken(digest: digest, in: db), clientID == nil || token.clientID == clientID else { return nil }
            try db.execute(cached: "UPDATE oauth_token SET revoked_at = ? WHERE digest = ? AND revoked_at IS NULL", arguments: [now, digest])
            try Self.append(audit(token), in: db)
            return token
        }
    }

    public func revokeRegistration(clientID: String, now: Int64, audit: [AuditEvent]) async throws -> [String]? {
        try await writes.write { db in
            guard let text = try String.fetchOne(db, cached: "SELECT data FROM oauth_agent WHERE client_id = ?", arguments: [clientID]) else {
                return nil
            }
            var registration = try StoredDocument.decode(AgentRegistration.self, text)
            registration.status = .denied
            try db.execute(cached: "UPDATE oauth_agent SET data = ? WHERE client_id = ?", arguments: [try StoredDocument.encode(registration), clientID])
            // A session the user already completed would otherwise still be redeemed for a token.
            let open = try String.fetchAll(
                db, cached: "SELECT data FROM oauth_session WHERE client_id = ? AND status IN ('pending', 'completed')", arguments: [clientID])
            for text in open {
                var session = try StoredDocument.decode(AuthorizationSession.self, text)
                session.status = .denied
                session.denial = "registration_revoked"
                try db.execute(cached: "UPDATE oauth_session SET status = 'denied', data = ?, sealed_grant = NULL WHERE id = ?",
                    arguments: [try StoredDocument.encode(session), session.id])
            }
            let digests = try String.fetchAll(
                db, cached: "SELECT digest FROM oauth_token WHERE client_id = ? AND revoked_at IS NULL", arguments: [clientID])
            try db.execute(cached: "UPDATE oauth_token SET revoked_at = ? WHERE client_id = ? AND revoked_at IS NULL", arguments: [now, clientID])
            try Self.append(audit, in: db)
            return digests
        }
    }

    public func purgeAuthorizations(expiredBefore before: Int64) async throws -> (sessions: Int, tokens: Int) {
        try await db.write { db in
            try db.execute(cached: "DELETE FROM oauth_token WHERE expires_at < ?", arguments: [before])
            let tokens = db.changesCount
            // A redeemed session stays while a token uses its provider grant.
            try db.execute(cached: """
                    DELETE FROM oauth_session WHERE expires_at < ?
                    AND NOT EXISTS (SELECT 1 FROM oauth_token WHERE oauth_token.session_id = oauth_session.id)
                    """,
                arguments: [before])
            return (db.changesCount, tokens)
        }
    }
}
