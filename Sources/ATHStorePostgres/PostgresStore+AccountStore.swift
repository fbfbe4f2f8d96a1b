import ATHCore
import ATHStore
import Foundation
import PostgresNIO

/// Accounts as `SQLiteStore` keeps them. Where SQLite's single writer serialized a change of an
/// account against a grant being made for it, PostgreSQL's row lock on the account does: a
/// suspension or a new type updates the account row first, a completing handshake reads its
/// parties' rows `FOR SHARE`, so one waits for the other and then sees its result.
extension PostgresStore: AccountStore {
    public func registerAccount(_ account: Account, key: PublicKey?, audit: [AuditEvent]) async throws {
        try Account.validateExternalID(account.did)
        for id in account.externalIDs { try Account.validateExternalID(id) }
        for alias in account.aliases { try Account.validateAlias(alias) }
        try await transaction { c in
            let internalID = "i." + Nonce.generate(bytes: 16)
            let now = Int64(Date().timeIntervalSince1970)
            try await c.query(
                """
                INSERT INTO account (internal_id, kind, name, developer, created_at, account_type)
                VALUES (\(internalID), \(account.kind.rawValue), \(account.name), \(account.developer), \(now), \(account.accountType))
                """, logger: self.logger)
            for (position, id) in ([account.did] + account.externalIDs).enumerated() {
                try await Self.insertExternalID(id, internalID: internalID, position: position, on: c, self.logger)
            }
            for alias in account.aliases { try await Self.insertAlias(alias, internalID: internalID, on: c, self.logger) }
            if let key { try await Self.insertKey(key, internalID: internalID, now: now, on: c, self.logger) }
            try await self.append(audit, on: c)
        }
    }

    /// The unique indexes decide; the violation aborts the transaction, which writes nothing.
    static func insertExternalID(_ id: String, internalID: String, position: Int, on c: PostgresConnection, _ logger: Logger) async throws {
        do {
            try await c.query("INSERT INTO external_id (value, internal_id, position) VALUES (\(id), \(internalID), \(position))", logger: logger)
        } catch let error as PSQLError where error.isUniqueViolation {
            throw StoreError.duplicate("external id \(id) is already taken")
        }
    }

    static func insertAlias(_ alias: String, internalID: String, on c: PostgresConnection, _ logger: Logger) async throws {
        do {
            try await c.query("INSERT INTO alias (value, internal_id) VALUES (\(alias), \(internalID))", logger: logger)
        } catch let error as PSQLError where error.isUniqueViolation {
            throw StoreError.duplicate("alias \(alias) is already taken")
        }
    }

    static func insertKey(_ key: PublicKey, internalID: String, now: Int64, on c: PostgresConnection, _ logger: Logger) async throws {
        do {
            try await c.query(
                "INSERT INTO account_key (internal_id, kid, pem, created_at) VALUES (\(internalID), \(key.thumbprint), \(key.pem), \(now))",
                logger: logger)
        } catch let error as PSQLError where error.isUniqueViolation {
            throw StoreError.duplicate("key \(key.thumbprint) is already registered for this account")
        }
    }

    static func internalID(of externalID: String, on c: PostgresConnection, _ logger: Logger) async throws -> String? {
        try await c.value(String.self, "SELECT internal_id FROM external_id WHERE value = \(externalID)", logger)
    }

    static func requireInternalID(of externalID: String, on c: PostgresConnection, _ logger: Logger) async throws -> String {
        guard let found = try await internalID(of: externalID, on: c, logger) else { throw StoreError.notFound("account \(externalID)") }
        return found
    }

    static func account(internalID: String, on c: PostgresConnection, _ logger: Logger) async throws -> Account? {
        guard
            let row = try await c.rows(
                "SELECT kind, name, developer, suspended_at, account_type FROM account WHERE internal_id = \(internalID)", logger
            ).first
        else { return nil }
        let ids = try await c.values(String.self, "SELECT value FROM external_id WHERE internal_id = \(internalID) ORDER BY position", logger)
        let aliases = try await c.values(String.self, "SELECT value FROM alias WHERE internal_id = \(internalID) ORDER BY lower(value)", logger)
        return Account(
            did: ids.first ?? "", kind: Account.Kind(rawValue: try row["kind"].decode(String.self)) ?? .user,
            name: try row["name"].decode(String.self), developer: try row["developer"].decode(String?.self), aliases: aliases,
            externalIDs: Array(ids.dropFirst()), suspendedAt: try row["suspended_at"].decode(Int64?.self),
            accountType: try row["account_type"].decode(String?.self))
    }

    public func account(did: String) async throws -> Account? {
        try await read { c in
            guard let id = try await Self.internalID(of: did, on: c, self.logger) else { return nil }
            return try await Self.account(internalID: id, on: c, self.logger)
        }
    }

    public func account(alias: String) async throws -> Account? {
        try await read { c in
            guard let id = try await c.value(String.self, "SELECT internal_id FROM alias WHERE lower(value) = lower(\(alias))", self.logger)
            else { return nil }
            return try await Self.account(internalID: id, on: c, self.logger)
        }
    }

    public func suspendAccount(did: String, now: Int64, audit: @escaping @Sendable ([String]) -> [AuditEvent]) async throws -> [String] {
        try await suspend(did, now: now, audit: audit)
    }

    private func suspend(_ did: String, now: Int64, audit: @escaping @Sendable ([String]) -> [AuditEvent]) async throws -> [String] {
        try await transaction { c in
            let internalID = try await Self.requireInternalID(of: did, on: c, self.logger)
            // Locks the account row: a grant being completed for it waits, then is refused.
            try await c.query(
                "UPDATE account SET suspended_at = COALESCE(suspended_at, \(now)) WHERE internal_id = \(internalID)", logger: self.logger)
            let ended = try await Self.liveGrants(of: did, now: now, on: c, self.logger).map(\.id).sorted()
            for id in ended { try await Self.revokeGrant(id, now: now, on: c, self.logger) }
            try await Self.notify(.grants(ended), on: c, self.logger)
            try await self.append(audit(ended), on: c)
            return ended
        }
    }

    public func setAccountType(
        did: String, to type: String?, now: Int64, ending ends: @escaping @Sendable (Grant, Bool) -> Bool, audit: @escaping @Sendable ([String]) -> [AuditEvent]
    ) async throws -> [String] {
        try await setType(did, to: type, now: now, ending: ends, audit: audit)
    }

    private func setType(
        _ did: String, to type: String?, now: Int64, ending ends: @escaping @Sendable (Grant, Bool) -> Bool,
        audit: @escaping @Sendable ([String]) -> [AuditEvent]
    ) async throws -> [String] {
        try await transaction { c in
            let internalID = try await Self.requireInternalID(of: did, on: c, self.logger)
            try await c.query("UPDATE account SET account_type = \(type) WHERE internal_id = \(internalID)", logger: self.logger)
            let names = Set(try await c.values(String.self, "SELECT value FROM external_id WHERE internal_id = \(internalID)", self.logger))
            var ended: [String] = []
            for row in try await Self.liveGrants(of: did, now: now, on: c, self.logger) {
                let grant = try StoredDocument.decode(Grant.self, row.data)
                if ends(grant, names.contains(grant.clientDID.value)) { ended.append(row.id) }
            }
            for id in ended { try await Self.revokeGrant(id, now: now, on: c, self.logger) }
            try await Self.notify(.grants(ended), on: c, self.logger)
            try await self.append(audit(ended), on: c)
            return ended
        }
    }

    public func activeGrants(did: String, now: Int64) async throws -> [Grant] {
        let rows = try await read { c in try await Self.liveGrants(of: did, now: now, on: c, self.logger) }
        return try rows.map { try StoredDocument.decode(Grant.self, $0.data) }
    }

    /// Grants in force naming the account of `did` (under any of its external ids) as agent or user.
    static func liveGrants(of did: String, now: Int64, on c: PostgresConnection, _ logger: Logger) async throws -> [(id: String, data: String)] {
        try await c.rows(
            """
            WITH names AS (
                SELECT value FROM external_id WHERE internal_id = (SELECT internal_id FROM external_id WHERE value = \(did))
                UNION SELECT \(did)::text)
            SELECT id, data FROM grant_record WHERE revoked_at IS NULL AND expires_at > \(now)
            AND (client_did IN (SELECT value FROM names) OR user_did IN (SELECT value FROM names)) ORDER BY created_at, id
            """, logger
        ).map { (id: try $0["id"].decode(String.self), data: try $0["data"].decode(String.self)) }
    }

    public func reinstateAccount(did: String, audit: [AuditEvent]) async throws {
        try await transaction { c in
            let internalID = try await Self.requireInternalID(of: did, on: c, self.logger)
            try await c.query("UPDATE account SET suspended_at = NULL WHERE internal_id = \(internalID)", logger: self.logger)
            try await self.append(audit, on: c)
        }
    }

    public func isSuspended(did: String) async throws -> Bool {
        try await read { c in
            try await c.value(Bool.self, "SELECT \(accountSuspended: did)", self.logger) ?? false
        }
    }

    public func addExternalID(_ externalID: String, to did: String, audit: [AuditEvent]) async throws {
        try Account.validateExternalID(externalID)
        try await transaction { c in
            let internalID = try await Self.requireInternalID(of: did, on: c, self.logger)
            let position = try await c.value(Int64.self, "SELECT COUNT(*) FROM external_id WHERE internal_id = \(internalID)", self.logger) ?? 0
            try await Self.insertExternalID(externalID, internalID: internalID, position: Int(position), on: c, self.logger)
            try await self.append(audit, on: c)
        }
    }

    public func addAlias(_ alias: String, to did: String, audit: [AuditEvent]) async throws {
        try Account.validateAlias(alias)
        try await transaction { c in
            try await Self.insertAlias(alias, internalID: try await Self.requireInternalID(of: did, on: c, self.logger), on: c, self.logger)
            try await self.append(audit, on: c)
        }
    }

    public func addKey(did: String, key: PublicKey, audit: [AuditEvent]) async throws {
        try await transaction { c in
            let internalID = try await Self.requireInternalID(of: did, on: c, self.logger)
            try await Self.insertKey(key, internalID: internalID, now: Int64(Date().timeIntervalSince1970), on: c, self.logger)
            try await self.append(audit, on: c)
        }
    }

    public func revokeKey(did: String, kid: String, audit: [AuditEvent]) async throws {
        try await transaction { c in
            try await Self.revoke(kid, internalID: try await Self.requireInternalID(of: did, on: c, self.logger), on: c, self.logger)
            try await self.append(audit, on: c)
        }
    }

    static func revoke(_ kid: String, internalID: String, on c: PostgresConnection, _ logger: Logger) async throws {
        let now = Int64(Date().timeIntervalSince1970)
        let changed = try await c.changed(
            """
            UPDATE account_key SET revoked_at = \(now) WHERE internal_id = \(internalID) AND kid = \(kid) AND revoked_at IS NULL
            RETURNING 1
            """, logger)
        guard changed == 1 else { throw StoreError.notFound("active key \(kid)") }
    }

    public func rotateKey(did: String, revoking kid: String, to newKey: PublicKey, audit: [AuditEvent]) async throws {
        try await transaction { c in
            let internalID = try await Self.requireInternalID(of: did, on: c, self.logger)
            try await Self.insertKey(newKey, internalID: internalID, now: Int64(Date().timeIntervalSince1970), on: c, self.logger)
            try await Self.revoke(kid, internalID: internalID, on: c, self.logger)
            try await self.append(audit, on: c)
        }
    }

    public func activeKeys(did: String) async throws -> [PublicKey] {
        let pems = try await read { c in
            try await c.values(
                String.self,
                """
                SELECT k.pem FROM account_key k JOIN external_id e ON e.internal_id = k.internal_id
                WHERE e.value = \(did) AND k.revoked_at IS NULL ORDER BY k.created_at, k.added
                """, self.logger)
        }
        return pems.compactMap { try? PublicKey(pem: $0) }
    }
}

extension PostgresQuery.StringInterpolation {
    /// Whether an account with external id `did` is suspended, as an SQL boolean: asked alone
    /// (`isSuspended`) or inside step 1's statement, which refuses a suspended agent.
    mutating func appendInterpolation(accountSuspended did: String) {
        appendLiteral("EXISTS (SELECT 1 FROM external_id e JOIN account a USING (internal_id) WHERE e.value = ")
        appendInterpolation(did)
        appendLiteral(" AND a.suspended_at IS NOT NULL)")
    }
}
