import ATHCore
import ATHStore
import Foundation
import PostgresNIO

/// The v0.1 API's records. Each state change is an UPDATE whose condition is the state it
/// expects: two instances racing on one session or token both run it, one changes the row.
extension PostgresStore: OAuthAPIStore {
    public func register(_ registration: AgentRegistration, audit: [AuditEvent]) async throws {
        let data = try StoredDocument.encode(registration)
        try await transaction { c in
            do {
                try await c.query(
                    "INSERT INTO oauth_agent (client_id, agent_id, data) VALUES (\(registration.clientID), \(registration.agentID), \(data))",
                    logger: self.logger)
            } catch let error as PSQLError where error.isUniqueViolation {
                throw StoreError.duplicate("agent \(registration.agentID) is already registered")
            }
            try await self.append(audit, on: c)
        }
    }

    public func registration(clientID: String) async throws -> AgentRegistration? {
        let data = try await read { c in try await c.value(String.self, "SELECT data FROM oauth_agent WHERE client_id = \(clientID)", self.logger) }
        return try data.map { try StoredDocument.decode(AgentRegistration.self, $0) }
    }

    public func beginAuthorization(_ session: AuthorizationSession, audit: [AuditEvent]) async throws {
        let data = try StoredDocument.encode(session)
        try await transaction { c in
            try await c.query(
                """
                INSERT INTO oauth_session (id, provider_state, client_id, status, expires_at, data)
                VALUES (\(session.id), \(session.providerState), \(session.clientID), \(session.status.rawValue), \(session.expiresAt), \(data))
                """, logger: self.logger)
            try await self.append(audit, on: c)
        }
    }

    public func authorizationSession(id: String) async throws -> AuthorizationSession? {
        try await loadSession("SELECT data FROM oauth_session WHERE id = \(id)")
    }

    public func authorizationSession(providerState: String) async throws -> AuthorizationSession? {
        try await loadSession("SELECT data FROM oauth_session WHERE provider_state = \(providerState)")
    }

    private func loadSession(_ query: PostgresQuery) async throws -> AuthorizationSession? {
        let data = try await read { c in try await c.value(String.self, query, self.logger) }
        return try data.map { try StoredDocument.decode(AuthorizationSession.self, $0) }
    }

    public func bindAuthorization(id: String, bindingDigest: String, now: Int64, audit: [AuditEvent]) async throws -> Bool {
        try await transaction { c in
            guard
                let text = try await c.value(
                    String.self, "SELECT data FROM oauth_session WHERE id = \(id) AND status = 'pending' AND expires_at > \(now) FOR UPDATE",
                    self.logger)
            else { return false }
            var session = try StoredDocument.decode(AuthorizationSession.self, text)
            guard session.bindingDigest == nil else { return false }
            session.bindingDigest = bindingDigest
            try await c.query("UPDATE oauth_session SET data = \(try StoredDocument.encode(session)) WHERE id = \(id)", logger: self.logger)
            try await self.append(audit, on: c)
            return true
        }
    }

    public func finishAuthorization(_ finished: AuthorizationSession, sealedGrant: Data?, now: Int64, audit: [AuditEvent]) async throws -> Bool {
        let data = try StoredDocument.encode(finished)
        let grant = sealedGrant.map { ByteBuffer(bytes: $0) }
        return try await transaction { c in
            let changed = try await c.changed(
                """
                UPDATE oauth_session SET status = \(finished.status.rawValue), data = \(data), sealed_grant = \(grant)
                WHERE id = \(finished.id) AND status = 'pending' AND expires_at > \(now) RETURNING 1
                """, self.logger)
            guard changed == 1 else { return false }
            try await self.append(audit, on: c)
            return true
        }
    }

    public func redeemAuthorization(id: String, issuing token: IssuedAccessToken, now: Int64, audit: [AuditEvent]) async throws -> Bool {
        let tokenData = try StoredDocument.encode(token)
        return try await transaction { c in
            guard
                let text = try await c.value(
                    String.self, "SELECT data FROM oauth_session WHERE id = \(id) AND status = 'completed' AND expires_at > \(now) FOR UPDATE",
                    self.logger)
            else { return false }
            var session = try StoredDocument.decode(AuthorizationSession.self, text)
            session.status = .redeemed
            try await c.query(
                "UPDATE oauth_session SET status = 'redeemed', data = \(try StoredDocument.encode(session)) WHERE id = \(id)", logger: self.logger)
            try await c.query(
                """
                INSERT INTO oauth_token (digest, client_id, session_id, expires_at, revoked_at, data)
                VALUES (\(token.digest), \(token.clientID), \(token.sessionID), \(token.expiresAt), NULL, \(tokenData))
                """, logger: self.logger)
            try await self.append(audit, on: c)
            return true
        }
    }

    public func issuedTokenAndGrant(digest: String) async throws -> (token: IssuedAccessToken, sealedGrant: Data?)? {
        let row = try await read { c in
            try await c.rows(
                """
                SELECT t.data, t.revoked_at, s.sealed_grant FROM oauth_token t
                LEFT JOIN oauth_session s ON s.id = t.session_id AND s.status IN ('completed', 'redeemed')
                WHERE t.digest = \(digest)
                """, self.logger
            ).first.map {
                (try $0["data"].decode(String.self), try $0["revoked_at"].decode(Int64?.self), try $0["sealed_grant"].decode(ByteBuffer?.self))
            }
        }
        guard let row else { return nil }
        var token = try StoredDocument.decode(IssuedAccessToken.self, row.0)
        token.revokedAt = row.1
        return (token, row.2.map { Data(buffer: $0) })
    }

    public func issuedTokenRevocation(digest: String) async throws -> TokenStanding {
        try await read { c in
            guard let row = try await c.rows("SELECT revoked_at FROM oauth_token WHERE digest = \(digest)", self.logger).first else { return .gone }
            return try row["revoked_at"].decode(Int64?.self) == nil ? .active : .revoked
        }
    }

    public func revokeIssuedToken(
        digest: String, clientID: String?, now: Int64, audit: @escaping @Sendable (IssuedAccessToken) -> [AuditEvent]
    ) async throws -> IssuedAccessToken? {
        try await transaction { c in
            guard
                let row = try await c.rows("SELECT data, revoked_at FROM oauth_token WHERE digest = \(digest) FOR UPDATE", self.logger).first
            else { return nil }
            var token = try StoredDocument.decode(IssuedAccessToken.self, try row["data"].decode(String.self))
            token.revokedAt = try row["revoked_at"].decode(Int64?.self)
            guard clientID == nil || token.clientID == clientID else { return nil }
            try await c.query("UPDATE oauth_token SET revoked_at = \(now) WHERE digest = \(digest) AND revoked_at IS NULL", logger: self.logger)
            try await Self.notify(.issuedToken(digest: digest), on: c, self.logger)
            try await self.append(audit(token), on: c)
            return token
        }
    }

    public func revokeRegistration(clientID: String, now: Int64, audit: [AuditEvent]) async throws -> [String]? {
        try await transaction { c in
            guard let text = try await c.value(String.self, "SELECT data FROM oauth_agent WHERE client_id = \(clientID) FOR UPDATE", self.logger)
            else { return nil }
            var registration = try StoredDocument.decode(AgentRegistration.self, text)
            registration.status = .denied
            try await c.query(
                "UPDATE oauth_agent SET data = \(try StoredDocument.encode(registration)) WHERE client_id = \(clientID)", logger: self.logger)
            // A session the user already completed would otherwise still be redeemed for a token.
            let open = try await c.values(
                String.self, "SELECT data FROM oauth_session WHERE client_id = \(clientID) AND status IN ('pending', 'completed') FOR UPDATE",
                self.logger)
            for text in open {
                var session = try StoredDocument.decode(AuthorizationSession.self, text)
                session.status = .denied
                session.denial = "registration_revoked"
                try await c.query(
                    """
                    UPDATE oauth_session SET status = 'denied', data = \(try StoredDocument.encode(session)), sealed_grant = NULL
                    WHERE id = \(session.id)
                    """, logger: self.logger)
            }
            let digests = try await c.values(
                String.self, "UPDATE oauth_token SET revoked_at = \(now) WHERE client_id = \(clientID) AND revoked_at IS NULL RETURNING digest",
                self.logger)
            try await Self.notify(.registration(clientID: clientID), on: c, self.logger)
            try await self.append(audit, on: c)
            return digests
        }
    }

    public func purgeAuthorizations(expiredBefore before: Int64) async throws -> (sessions: Int, tokens: Int) {
        try await transaction { c in
            let tokens = try await c.changed("DELETE FROM oauth_token WHERE expires_at < \(before) RETURNING 1", self.logger)
            // A redeemed session stays while a token uses its provider grant.
            let sessions = try await c.changed(
                """
                DELETE FROM oauth_session s WHERE expires_at < \(before)
                AND NOT EXISTS (SELECT 1 FROM oauth_token t WHERE t.session_id = s.id) RETURNING 1
                """, self.logger)
            return (sessions, tokens)
        }
    }
}

extension PostgresStore: ATHStore {}
