import ATHCore
import ATHStore
import Crypto
import Foundation
import GRDB

/// The default store: one SQLite file through GRDB, in WAL mode.
public final class SQLiteStore: ATHStore {
    let db: DatabasePool
    /// Every write a request makes goes through it (`GroupCommit`); the retention sweep's long
    /// batches take transactions of their own.
    let writes: GroupCommit

    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    public init(path: String) throws {
        var config = Configuration()
        config.busyMode = .timeout(5)
        // Processes that open a new file at once (`ath gateway` and `ath authz` on one store)
        // would each find no migration applied and both apply the first: the migrator reads what
        // is applied before it takes SQLite's write lock. One at a time, by a lock beside the file,
        // taken before the pool opens: opening switches a new file to WAL, which SQLite may refuse
        // at once ("database is locked") to another opener doing the same, whatever the timeout.
        let lock = open(path + ".lock", O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        guard lock >= 0 else { throw StoreError.corrupt("cannot open the migration lock \(path).lock") }
        defer { close(lock) }
        while flock(lock, LOCK_EX) != 0 {
            guard errno == EINTR else { throw StoreError.corrupt("cannot lock \(path).lock") }
        }
        db = try DatabasePool(path: path, configuration: config)
        // GRDB opens a pool with `synchronous = NORMAL`, under which a commit can still be lost to
        // a power cut or an operating system crash: a revocation the admin was told about, a nonce
        // recorded as used. FULL syncs the log at every commit, and `GroupCommit` shares that sync
        // between the writes that wait for it. Set after the pool opens, since GRDB sets NORMAL
        // then; only the writer's connection writes.
        try db.writeWithoutTransaction { try $0.execute(sql: "PRAGMA synchronous = FULL") }
        writes = GroupCommit(db)
        try Self.migrator.migrate(db)
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE account (
                        did TEXT PRIMARY KEY NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, developer TEXT);
                    CREATE TABLE account_key (
                        did TEXT NOT NULL REFERENCES account(did), kid TEXT NOT NULL, pem TEXT NOT NULL,
                        revoked_at INTEGER, PRIMARY KEY (did, kid));
                    CREATE TABLE nonce (key TEXT PRIMARY KEY NOT NULL, expires_at INTEGER NOT NULL);
                    CREATE INDEX nonce_expiry ON nonce(expires_at);
                    CREATE TABLE handshake (
                        id TEXT PRIMARY KEY NOT NULL, state TEXT NOT NULL, client_did TEXT NOT NULL, user_did TEXT,
                        request_id TEXT UNIQUE, deadline INTEGER NOT NULL, revision INTEGER NOT NULL, data TEXT NOT NULL);
                    CREATE INDEX handshake_user ON handshake(user_did, state);
                    CREATE TABLE grant_record (
                        id TEXT PRIMARY KEY NOT NULL, handshake_id TEXT NOT NULL UNIQUE REFERENCES handshake(id),
                        client_did TEXT NOT NULL, user_did TEXT NOT NULL, credential_id TEXT NOT NULL,
                        data TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, revoked_at INTEGER);
                    CREATE TABLE session (
                        id TEXT PRIMARY KEY NOT NULL, grant_id TEXT NOT NULL REFERENCES grant_record(id),
                        proof_key BLOB NOT NULL, expires_at INTEGER NOT NULL);
                    CREATE TABLE token (
                        jti TEXT PRIMARY KEY NOT NULL, grant_id TEXT NOT NULL REFERENCES grant_record(id),
                        session_id TEXT NOT NULL REFERENCES session(id), issued_at INTEGER NOT NULL,
                        expires_at INTEGER NOT NULL, revoked_at INTEGER);
                    CREATE TABLE audit (
                        seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, event TEXT NOT NULL,
                        actor TEXT NOT NULL, subject TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL,
                        hash TEXT NOT NULL);
                    """)
        }
        // Proof keys are sealed from here on; a key stored in the clear before cannot be opened
        // and its session fails closed (the agent runs a new handshake).
        m.registerMigration("v2-sealed-proof-keys") { db in
            try db.execute(sql: "ALTER TABLE session RENAME COLUMN proof_key TO sealed_proof_key")
        }
        // Act Auth's model: an internal id per account (never equal to an external id: it starts
        // with "i.", which base64url and DIDs cannot), external ids and aliases in their own
        // tables, keys by internal id. Existing accounts keep their DID as first external id.
        m.registerMigration("v3-act-auth-accounts") { db in
            try db.execute(
                sql: """
                    CREATE TABLE account_v3 (
                        internal_id TEXT PRIMARY KEY NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, developer TEXT,
                        created_at INTEGER NOT NULL);
                    CREATE TABLE external_id (
                        value TEXT PRIMARY KEY NOT NULL, internal_id TEXT NOT NULL REFERENCES account_v3(internal_id),
                        position INTEGER NOT NULL);
                    CREATE INDEX external_id_account ON external_id(internal_id);
                    CREATE TABLE alias (
                        value TEXT PRIMARY KEY NOT NULL COLLATE NOCASE, internal_id TEXT NOT NULL REFERENCES account_v3(internal_id));
                    CREATE INDEX alias_account ON alias(internal_id);
                    CREATE TABLE account_key_v3 (
                        internal_id TEXT NOT NULL REFERENCES account_v3(internal_id), kid TEXT NOT NULL, pem TEXT NOT NULL,
                        created_at INTEGER NOT NULL, revoked_at INTEGER, PRIMARY KEY (internal_id, kid));
                    """)
            let now = Int64(Date().timeIntervalSince1970)
            for row in try Row.fetchAll(db, sql: "SELECT did, kind, name, developer FROM account") {
                let internalID = Self.newInternalID()
                let did: String = row["did"]
                try db.execute(
                    sql: "INSERT INTO account_v3 (internal_id, kind, name, developer, created_at) VALUES (?, ?, ?, ?, ?)",
                    arguments: [internalID, row["kind"], row["name"], row["developer"], now])
                try db.execute(sql: "INSERT INTO external_id (value, internal_id, position) VALUES (?, ?, 0)", arguments: [did, internalID])
                try db.execute(
                    sql: """
                        INSERT INTO account_key_v3 (internal_id, kid, pem, created_at, revoked_at)
                        SELECT ?, kid, pem, ?, revoked_at FROM account_key WHERE did = ?
                        """,
                    arguments: [internalID, now, did])
            }
            try db.execute(
                sql: """
                    DROP TABLE account_key; DROP TABLE account;
                    ALTER TABLE account_v3 RENAME TO account; ALTER TABLE account_key_v3 RENAME TO account_key;
                    """)
        }
        m.registerMigration("v4-revoked-credentials") { db in
            try db.execute(
                sql: """
                    CREATE TABLE revoked_credential (
                        jti TEXT NOT NULL, user_did TEXT NOT NULL, revoked_at INTEGER NOT NULL, PRIMARY KEY (jti, user_did));
                    CREATE INDEX grant_credential ON grant_record(credential_id);
                    CREATE INDEX grant_user ON grant_record(user_did);
                    """)
        }
        m.registerMigration("v5-suspension-append-only-audit") { db in
            // The triggers make the log append-only for every writer going through SQLite; someone
            // who edits the file or drops them is caught by the hash chain (`AuditChain`).
            try db.execute(
                sql: """
                    ALTER TABLE account ADD COLUMN suspended_at INTEGER;
                    CREATE INDEX grant_client ON grant_record(client_did);
                    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
                        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
                        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                    """)
        }
        m.registerMigration("v6-account-types") { db in
            try db.execute(sql: "ALTER TABLE account ADD COLUMN account_type TEXT")
        }
        // The retention sweep finds ended handshakes by deadline.
        m.registerMigration("v7-handshake-retention") { db in
            if try db.tableExists("handshake") { try db.execute(sql: "CREATE INDEX handshake_deadline ON handshake(deadline)") }
        }
        // The v0.1 HTTP API (`OAuthAPIStore`). Columns for what is looked up or changed; the
        // rest of each record is its JSON document.
        m.registerMigration("v8-oauth-api") { db in
            try db.execute(
                sql: """
                    CREATE TABLE oauth_agent (
                        client_id TEXT PRIMARY KEY NOT NULL, agent_id TEXT NOT NULL UNIQUE, data TEXT NOT NULL);
                    CREATE TABLE oauth_session (
                        id TEXT PRIMARY KEY NOT NULL, provider_state TEXT NOT NULL UNIQUE, client_id TEXT NOT NULL,
                        status TEXT NOT NULL, expires_at INTEGER NOT NULL, data TEXT NOT NULL, sealed_grant BLOB);
                    CREATE INDEX oauth_session_expiry ON oauth_session(expires_at);
                    CREATE TABLE oauth_token (
                        digest TEXT PRIMARY KEY NOT NULL, client_id TEXT NOT NULL, session_id TEXT NOT NULL,
                        expires_at INTEGER NOT NULL, revoked_at INTEGER, data TEXT NOT NULL);
                    CREATE INDEX oauth_token_expiry ON oauth_token(expires_at);
                    """)
        }
        // The retention sweep finds ended grants by their end; their sessions and tokens go with
        // them, and a revocation ends a grant's tokens, both by grant (without an index, a scan of
        // every token ever issued).
        m.registerMigration("v9-grant-retention") { db in
            let indexes = [
                ("grant_record", "CREATE INDEX grant_expiry ON grant_record(expires_at)"),
                ("grant_record", "CREATE INDEX grant_revoked ON grant_record(revoked_at) WHERE revoked_at IS NOT NULL"),
                ("session", "CREATE INDEX session_grant ON session(grant_id)"),
                ("token", "CREATE INDEX token_grant ON token(grant_id)"),
            ]
            for (table, sql) in indexes where try db.tableExists(table) { try db.execute(sql: sql) }
        }
        return m
    }

    /// "i." and 22 base64url characters (128 random bits): unique, and never an external id.
    static func newInternalID() -> String {
        "i." + Nonce.generate(bytes: 16)
    }

    // MARK: Accounts

    public func registerAccount(_ account: Account, key: PublicKey?, audit: [AuditEvent]) async throws {
        try Account.validateExternalID(account.did)
        for id in account.externalIDs { try Account.validateExternalID(id) }
        for alias in account.aliases { try Account.validateAlias(alias) }
        try await writes.write { db in
            let internalID = Self.newInternalID()
            let now = Int64(Date().timeIntervalSince1970)
            try db.execute(cached: "INSERT INTO account (internal_id, kind, name, developer, created_at, account_type) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [internalID, account.kind.rawValue, account.name, account.developer, now, account.accountType])
            for (position, id) in ([account.did] + account.externalIDs).enumerated() {
                try Self.insertExternalID(id, internalID: internalID, position: position, in: db)
            }
            for alias in account.aliases { try Self.insertAlias(alias, internalID: internalID, in: db) }
            if let key {
                try db.execute(cached: "INSERT INTO account_key (internal_id, kid, pem, created_at) VALUES (?, ?, ?, ?)",
                    arguments: [internalID, key.thumbprint, key.pem, now])
            }
            try Self.append(audit, in: db)
        }
    }

    /// The unique indexes decide; the transaction they abort leaves nothing written.
    static func insertExternalID(_ id: String, internalID: String, position: Int, in db: Database) throws {
        do {
            try db.execute(cached: "INSERT INTO external_id (value, internal_id, position) VALUES (?, ?, ?)", arguments: [id, internalID, position])
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
            throw StoreError.duplicate("external id \(id) is already taken")
        }
    }

    static func insertAlias(_ alias: String, internalID: String, in db: Database) throws {
        do {
            try db.execute(cached: "INSERT INTO alias (value, internal_id) VALUES (?, ?)", arguments: [alias, internalID])
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
            throw StoreError.duplicate("alias \(alias) is already taken")
        }
    }

    static func internalID(of externalID: String, in db: Database) throws -> String? {
        try String.fetchOne(db, cached: "SELECT internal_id FROM external_id WHERE value = ?", arguments: [externalID])
    }

    static func requireInternalID(of externalID: String, in db: Database) throws -> String {
        guard let found = try Self.internalID(of: externalID, in: db) else { throw StoreError.notFound("account \(externalID)") }
        return found
    }

    static func account(internalID: String, in db: Database) throws -> Account? {
        guard let row = try Row.fetchOne(db, cached: "SELECT * FROM account WHERE internal_id = ?", arguments: [internalID]) else {
            return nil
        }
        let ids = try String.fetchAll(
            db, cached: "SELECT value FROM external_id WHERE internal_id = ? ORDER BY position", arguments: [internalID])
        let aliases = try String.fetchAll(db, cached: "SELECT value FROM alias WHERE internal_id = ? ORDER BY value", arguments: [internalID])
        return Account(
            did: ids.first ?? "", kind: Account.Kind(rawValue: row["kind"]) ?? .user, name: row["name"], developer: row["developer"],
            aliases: aliases, externalIDs: Array(ids.dropFirst()), suspendedAt: row["suspended_at"], accountType: row["account_type"])
    }

    /// By any of the account's external ids (its DID or another).
    public func account(did: String) async throws -> Account? {
        try await db.read { db in
            try Self.internalID(of: did, in: db).flatMap { try Self.account(internalID: $0, in: db) }
        }
    }

    public func account(alias: String) async throws -> Account? {
        try await db.read { db in
            try String.fetchOne(db, cached: "SELECT internal_id FROM alias WHERE value = ?", arguments: [alias])
                .flatMap { try Self.account(internalID: $0, in: db) }
        }
    }

    public func suspendAccount(did: String, now: Int64, audit: @escaping @Sendable ([String]) -> [AuditEvent]) async throws -> [String] {
        try await writes.write { db in
            let internalID = try Self.requireInternalID(of: did, in: db)
            try db.execute(cached: "UPDATE account SET suspended_at = ? WHERE internal_id = ? AND suspended_at IS NULL", arguments: [now, internalID])
            let ended = try Self.liveGrants(of: did, now: now, in: db).map(\.id).sorted()
            for id in ended { try Self.revokeGrant(id, now: now, in: db) }
            try Self.append(audit(ended), in: db)
            return ended
        }
    }

    public func setAccountType(
        did: String, to type: String?, now: Int64, ending ends: @escaping @Sendable (Grant, Bool) -> Bool, audit: @escaping @Sendable ([String]) -> [AuditEvent]
    ) async throws -> [String] {
        try await writes.write { db in
            let internalID = try Self.requireInternalID(of: did, in: db)
            try db.execute(cached: "UPDATE account SET account_type = ? WHERE internal_id = ?", arguments: [type, internalID])
            // The grants are read under the write lock that the type change holds: a handshake
            // completing meanwhile writes its grant before (seen here) or after (and its step 8
            // read the new type).
            let names = Set(try String.fetchAll(db, cached: "SELECT value FROM external_id WHERE internal_id = ?", arguments: [internalID]))
            var ended: [String] = []
            for row in try Self.liveGrants(of: did, now: now, in: db) {
                let grant = try StoredDocument.decode(Grant.self, row.data)
                if ends(grant, names.contains(grant.clientDID.value)) { ended.append(row.id) }
            }
            for id in ended { try Self.revokeGrant(id, now: now, in: db) }
            try Self.append(audit(ended), in: db)
            return ended
        }
    }

    public func activeGrants(did: String, now: Int64) async throws -> [Grant] {
        let rows = try await db.read { db in try Self.liveGrants(of: did, now: now, in: db) }
        return try rows.map { try StoredDocument.decode(Grant.self, $0.data) }
    }

    /// Grants in force naming the account of `did` as agent or user. Grants name their parties by
    /// DID, and any of the account's external ids may be the one they use.
    static func liveGrants(of did: String, now: Int64, in db: Database) throws -> [(id: String, data: String)] {
        try Row.fetchAll(
            db,
            cached: """
                WITH names AS (
                    SELECT value FROM external_id WHERE internal_id = (SELECT internal_id FROM external_id WHERE value = ?2)
                    UNION SELECT ?2)
                SELECT id, data FROM grant_record WHERE revoked_at IS NULL AND expires_at > ?1
                AND (client_did IN names OR user_did IN names) ORDER BY created_at, id
                """, arguments: [now, did]
        ).map { (id: $0["id"], data: $0["data"]) }
    }

    public func reinstateAccount(did: String, audit: [AuditEvent]) async throws {
        try await writes.write { db in
            let internalID = try Self.requireInternalID(of: did, in: db)
            try db.execute(cached: "UPDATE account SET suspended_at = NULL WHERE internal_id = ?", arguments: [internalID])
            try Self.append(audit, in: db)
        }
    }

    public func isSuspended(did: String) async throws -> Bool {
        try await db.read { db in try Self.isSuspended(did, in: db) }
    }

    static func isSuspended(_ did: String, in db: Database) throws -> Bool {
        try Bool.fetchOne(
            db,
            cached: """
                SELECT account.suspended_at IS NOT NULL FROM external_id JOIN account USING (internal_id)
                WHERE external_id.value = ?
                """, arguments: [did]) ?? false
    }

    public func addExternalID(_ externalID: String, to did: String, audit: [AuditEvent]) async throws {
        try Account.validateExternalID(externalID)
        try await writes.write { db in
            let internalID = try Self.requireInternalID(of: did, in: db)
            let position = try Int.fetchOne(db, cached: "SELECT COUNT(*) FROM external_id WHERE internal_id = ?", arguments: [internalID]) ?? 0
            try Self.insertExternalID(externalID, internalID: internalID, position: position, in: db)
            try Self.append(audit, in: db)
        }
    }

    public func addAlias(_ alias: String, to did: String, audit: [AuditEvent]) async throws {
        try Account.validateAlias(alias)
        try await writes.write { db in
            try Self.insertAlias(alias, internalID: try Self.requireInternalID(of: did, in: db), in: db)
            try Self.append(audit, in: db)
        }
    }

    public func addKey(did: String, key: PublicKey, audit: [AuditEvent]) async throws {
        try await writes.write { db in
            try Self.insertKey(key, internalID: try Self.requireInternalID(of: did, in: db), in: db)
            try Self.append(audit, in: db)
        }
    }

    static func insertKey(_ key: PublicKey, internalID: String, in db: Database) throws {
        do {
            try db.execute(cached: "INSERT INTO account_key (internal_id, kid, pem, created_at) VALUES (?, ?, ?, ?)",
                arguments: [internalID, key.thumbprint, key.pem, Int64(Date().timeIntervalSince1970)])
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
            throw StoreError.duplicate("key \(key.thumbprint) is already registered for this account")
        }
    }

    public func revokeKey(did: String, kid: String, audit: [AuditEvent]) async throws {
        try await writes.write { db in
            try Self.revoke(kid, internalID: try Self.requireInternalID(of: did, in: db), in: db)
            try Self.append(audit, in: db)
        }
    }

    static func revoke(_ kid: String, internalID: String, in db: Database) throws {
        try db.execute(cached: "UPDATE account_key SET revoked_at = ? WHERE internal_id = ? AND kid = ? AND revoked_at IS NULL",
            arguments: [Int64(Date().timeIntervalSince1970), internalID, kid])
        guard db.changesCount == 1 else { throw StoreError.notFound("active key \(kid)") }
    }

    public func rotateKey(did: String, revoking kid: String, to newKey: PublicKey, audit: [AuditEvent]) async throws {
        try await writes.write { db in
            let internalID = try Self.requireInternalID(of: did, in: db)
            try Self.insertKey(newKey, internalID: internalID, in: db)
            try Self.revoke(kid, internalID: internalID, in: db)
            try Self.append(audit, in: db)
        }
    }

    public func activeKeys(did: String) async throws -> [PublicKey] {
        let pems = try await db.read { db in
            try String.fetchAll(
                db,
                cached: """
                    SELECT k.pem FROM account_key k JOIN external_id e ON e.internal_id = k.internal_id
                    WHERE e.value = ? AND k.revoked_at IS NULL ORDER BY k.created_at
                    """,
                arguments: [did])
        }
        return pems.compactMap { try? PublicKey(pem: $0) }
    }

    // MARK: Nonces

    public func isNonceRecorded(_ key: String, now: Int64) async throws -> Bool {
        try await db.read { db in
            try Bool.fetchOne(db, cached: "SELECT 1 FROM nonce WHERE key = ? AND expires_at >= ?", arguments: [key, now]) ?? false
        }
    }

    public func consumeNonce(_ key: String, expiresAt: Int64, now: Int64, audit: [AuditEvent]) async throws -> Bool {
        try await writes.write { db in
            guard try Self.consume(key, expiresAt: expiresAt, now: now, in: db) else { return false }
            try Self.append(audit, in: db)
            return true
        }
    }

    static func consume(_ key: String, expiresAt: Int64, now: Int64, in db: Database) throws -> Bool {
        try db.execute(cached: "DELETE FROM nonce WHERE key = ? AND expires_at < ?", arguments: [key, now])
        try db.execute(cached: "INSERT OR IGNORE INTO nonce (key, expires_at) VALUES (?, ?)", arguments: [key, expiresAt])
        let fresh = db.changesCount == 1
        // Sweep a few expired entries on every write so the table stays bounded.
        try db.execute(cached: "DELETE FROM nonce WHERE key IN (SELECT key FROM nonce WHERE expires_at < ? LIMIT 16)", arguments: [now])
        return fresh
    }

    // MARK: Handshakes

    public func beginHandshake(_ handshake: ServerHandshake, nonce: String, nonceExpiresAt: Int64, now: Int64, audit: [AuditEvent])
        async throws -> Bool
    {
        let data = try StoredDocument.encode(handshake)
        return try await writes.write { db in
            if try Self.isSuspended(handshake.clientDID.value, in: db) { throw ATHError.suspended(handshake.clientDID.value.prefix(256), step: 3) }
            guard try Self.consume(nonce, expiresAt: nonceExpiresAt, now: now, in: db) else { return false }
            try db.execute(cached: """
                    INSERT INTO handshake (id, state, client_did, user_did, request_id, deadline, revision, data)
                    VALUES (?, ?, ?, NULL, NULL, ?, 0, ?)
                    """,
                arguments: [handshake.id, handshake.state.rawValue, handshake.clientDID.value, handshake.deadline, data])
            try Self.append(audit, in: db)
            return true
        }
    }

    public func purge(handshakesEndedBefore endedBefore: Int64, now: Int64) async throws -> PurgedRecords {
        var purged = try await db.write { db in
            // A handshake's deadline is when it ended at the latest: a refusal ends it earlier.
            try db.execute(
                cached: """
                    DELETE FROM handshake WHERE state != 'completed' AND deadline < ?
                    AND NOT EXISTS (SELECT 1 FROM grant_record WHERE grant_record.handshake_id = handshake.id)
                    """, arguments: [endedBefore])
            let handshakes = db.changesCount
            try db.execute(cached: "DELETE FROM nonce WHERE expires_at < ?", arguments: [now])
            return PurgedRecords(handshakes: handshakes, grants: 0, nonces: db.changesCount)
        }
        // Ended grants a batch per transaction, so that a backlog never holds the write lock long.
        while true {
            let batch = try await db.write { db in
                let ended = try Row.fetchAll(
                    db,
                    cached: """
                        SELECT id, handshake_id FROM grant_record WHERE expires_at < ?1
                        UNION SELECT id, handshake_id FROM grant_record WHERE revoked_at < ?1 LIMIT ?2
                        """, arguments: [endedBefore, PurgedRecords.batch])
                for row in ended {
                    let (grant, handshake): (String, String) = (row["id"], row["handshake_id"])
                    try db.execute(cached: "DELETE FROM token WHERE grant_id = ?", arguments: [grant])
                    try db.execute(cached: "DELETE FROM session WHERE grant_id = ?", arguments: [grant])
                    try db.execute(cached: "DELETE FROM grant_record WHERE id = ?", arguments: [grant])
                    try db.execute(cached: "DELETE FROM handshake WHERE id = ?", arguments: [handshake])
                }
                return ended.count
            }
            purged.grants += batch
            purged.handshakes += batch
            if batch < PurgedRecords.batch { return purged }
        }
    }

    public func handshake(id: String) async throws -> StoredHandshake? {
        try await loadHandshake(sql: "SELECT data, revision FROM handshake WHERE id = ?", id)
    }

    public func handshakeRevision(id: String) async throws -> Int? {
        try await db.read { db in try Int.fetchOne(db, cached: "SELECT revision FROM handshake WHERE id = ?", arguments: [id]) }
    }

    public func handshake(requestID: String) async throws -> StoredHandshake? {
        try await loadHandshake(sql: "SELECT data, revision FROM handshake WHERE request_id = ?", requestID)
    }

    private func loadHandshake(sql: String, _ key: String) async throws -> StoredHandshake? {
        let row = try await db.read { db in
            try Row.fetchOne(db, cached: sql, arguments: [key]).map { ($0["data"] as String, $0["revision"] as Int) }
        }
        guard let row else { return nil }
        return StoredHandshake(handshake: try StoredDocument.decode(ServerHandshake.self, row.0), revision: row.1)
    }

    public func pendingConfirmations(userDID: String, now: Int64) async throws -> [ServerHandshake] {
        let rows = try await db.read { db in
            try String.fetchAll(
                db, cached: "SELECT data FROM handshake WHERE user_did = ? AND state = ? AND deadline >= ? ORDER BY deadline",
                arguments: [userDID, ServerHandshake.State.awaitingConfirmation.rawValue, now])
        }
        return try rows.map { try StoredDocument.decode(ServerHandshake.self, $0) }
    }

    public func updateHandshake(
        _ handshake: ServerHandshake, expectedRevision: Int, completion: ServerHandshake.Completion?, sealedProofKey: Data?,
        audit: [AuditEvent]
    ) async throws {
        if completion != nil && sealedProofKey == nil {
            throw ATHError(.internalError, "a completed handshake needs its sealed proof key")
        }
        let data = try StoredDocument.encode(handshake)
        let grantData = try completion.map { try StoredDocument.encode($0.grant) }
        try await writes.write { db in
            try db.execute(cached: """
                    UPDATE handshake SET state = ?, user_did = ?, request_id = ?, deadline = ?, revision = revision + 1, data = ?
                    WHERE id = ? AND revision = ?
                    """,
                arguments: [
                    handshake.state.rawValue, handshake.scopeRequest?.userDID.value, handshake.confirmation?.request_id,
                    handshake.deadline, data, handshake.id, expectedRevision,
                ])
            guard db.changesCount == 1 else {
                throw ATHError.handshakeChangedConcurrently
            }
            if let completion, let grantData {
                let g = completion.grant
                // Checked again inside the transaction that writes the grant, so a revocation or
                // suspension that lands while the grant is being made cannot be missed.
                if try Self.isCredentialRevoked(g.credentialID, userDID: g.userDID.value, in: db) {
                    throw ATHError.revokedCredential(step: 8)
                }
                for party in [g.clientDID.value, g.userDID.value] where try Self.isSuspended(party, in: db) {
                    throw ATHError.suspended(party, step: 8)
                }
                try db.execute(cached: """
                        INSERT INTO grant_record (id, handshake_id, client_did, user_did, credential_id, data, created_at, expires_at)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [g.id, g.handshakeID, g.clientDID.value, g.userDID.value, g.credentialID, grantData, g.createdAt, g.expiresAt])
                try db.execute(cached: "INSERT INTO session (id, grant_id, sealed_proof_key, expires_at) VALUES (?, ?, ?, ?)",
                    arguments: [completion.session.sessionID, g.id, sealedProofKey, g.expiresAt])
                let t = completion.token
                try db.execute(cached: "INSERT INTO token (jti, grant_id, session_id, issued_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                    arguments: [t.jti, g.id, t.sid, t.iat, t.exp])
            }
            try Self.append(audit, in: db)
        }
    }

    // MARK: Grants, sessions, tokens

    public func grant(id: String) async throws -> Grant? {
        let row = try await db.read { db in
            try Row.fetchOne(db, cached: "SELECT data, revoked_at FROM grant_record WHERE id = ?", arguments: [id]).map {
                ($0["data"] as String, $0["revoked_at"] as Int64?)
            }
        }
        guard let row else { return nil }
        var grant = try StoredDocument.decode(Grant.self, row.0)
        grant.revoked = row.1 != nil
        return grant
    }

    public func session(id: String) async throws -> StoredSession? {
        try await db.read { db in
            try Row.fetchOne(db, cached: "SELECT * FROM session WHERE id = ?", arguments: [id]).map {
                StoredSession(id: $0["id"], grantID: $0["grant_id"], sealedProofKey: $0["sealed_proof_key"], expiresAt: $0["expires_at"])
            }
        }
    }

    public func token(jti: String) async throws -> StoredToken? {
        try await db.read { db in try Self.token(jti: jti, in: db) }
    }

    static func token(jti: String, in db: Database) throws -> StoredToken? {
        try Row.fetchOne(db, cached: "SELECT * FROM token WHERE jti = ?", arguments: [jti]).map {
            StoredToken(
                jti: $0["jti"], grantID: $0["grant_id"], sessionID: $0["session_id"], issuedAt: $0["issued_at"],
                expiresAt: $0["expires_at"], revokedAt: $0["revoked_at"])
        }
    }

    public func renewToken(revoking old: String, with new: StoredToken, now: Int64, audit: [AuditEvent]) async throws -> Bool {
        try await writes.write { db in
            try db.execute(cached: "UPDATE token SET revoked_at = ? WHERE jti = ? AND revoked_at IS NULL", arguments: [now, old])
            guard db.changesCount == 1 else { return false }
            try db.execute(cached: "INSERT INTO token (jti, grant_id, session_id, issued_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                arguments: [new.jti, new.grantID, new.sessionID, new.issuedAt, new.expiresAt])
            try Self.append(audit, in: db)
            return true
        }
    }

    public func revokeGrant(id: String, now: Int64, audit: [AuditEvent]) async throws -> Bool {
        try await writes.write { db in
            guard try Bool.fetchOne(db, cached: "SELECT 1 FROM grant_record WHERE id = ?", arguments: [id]) != nil else { return false }
            try Self.revokeGrant(id, now: now, in: db)
            try Self.append(audit, in: db)
            return true
        }
    }

    /// The grant and every token of it.
    static func revokeGrant(_ id: String, now: Int64, in db: Database) throws {
        try db.execute(cached: "UPDATE grant_record SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", arguments: [now, id])
        try db.execute(cached: "UPDATE token SET revoked_at = ? WHERE grant_id = ? AND revoked_at IS NULL", arguments: [now, id])
    }

    public func revokeCredential(jti: String, userDID: String, now: Int64, audit: @escaping @Sendable ([String]) -> [AuditEvent]) async throws
        -> [String]
    {
        try await writes.write { db in
            try db.execute(cached: "INSERT OR IGNORE INTO revoked_credential (jti, user_did, revoked_at) VALUES (?, ?, ?)", arguments: [jti, userDID, now])
            let rows = try Row.fetchAll(
                db, cached: "SELECT id, expires_at FROM grant_record WHERE credential_id = ? AND user_did = ? AND revoked_at IS NULL",
                arguments: [jti, userDID])
            for row in rows { try Self.revokeGrant(row["id"], now: now, in: db) }
            // Expired grants are marked too, but only those still in force are reported as ended.
            let ended: [String] = rows.filter { ($0["expires_at"] as Int64) > now }.map { $0["id"] }
            try Self.append(audit(ended), in: db)
            return ended
        }
    }

    public func isCredentialRevoked(jti: String, userDID: String) async throws -> Bool {
        try await db.read { db in try Self.isCredentialRevoked(jti, userDID: userDID, in: db) }
    }

    static func isCredentialRevoked(_ jti: String, userDID: String, in db: Database) throws -> Bool {
        try Bool.fetchOne(db, cached: "SELECT 1 FROM revoked_credential WHERE jti = ? AND user_did = ?", arguments: [jti, userDID]) ?? false
    }

    public func credentials(userDID: String, now: Int64) async throws -> [CredentialUse] {
        try await db.read { db in
            let used = try Row.fetchAll(
                db,
                cached: """
                    SELECT g.credential_id AS jti, g.client_did AS client_did, MIN(g.created_at) AS first_used_at, COUNT(*) AS grants,
                           SUM(CASE WHEN g.revoked_at IS NULL AND g.expires_at > ? THEN 1 ELSE 0 END) AS active_grants,
                           r.revoked_at AS revoked_at
                    FROM grant_record g LEFT JOIN revoked_credential r ON r.jti = g.credential_id AND r.user_did = g.user_did
                    WHERE g.user_did = ? GROUP BY g.credential_id, g.client_did
                    """,
                arguments: [now, userDID]
            ).map {
                CredentialUse(
                    jti: $0["jti"], client_did: $0["client_did"], first_used_at: $0["first_used_at"], grants: $0["grants"],
                    active_grants: $0["active_grants"], revoked_at: $0["revoked_at"])
            }
            // Revoked before any use: listed too, so the user sees what they revoked.
            let seen = Set(used.map(\.jti))
            let unused = try Row.fetchAll(db, cached: "SELECT jti, revoked_at FROM revoked_credential WHERE user_did = ?", arguments: [userDID])
                .filter { !seen.contains($0["jti"]) }
                .map { CredentialUse(jti: $0["jti"], client_did: "", first_used_at: 0, grants: 0, active_grants: 0, revoked_at: $0["revoked_at"]) }
            return (used + unused).sorted { ($0.first_used_at, $0.jti) > ($1.first_used_at, $1.jti) }
        }
    }

    public func revokeToken(jti: String, now: Int64, audit: @escaping @Sendable (StoredToken) -> [AuditEvent]) async throws -> StoredToken? {
        try await writes.write { db in
            guard let token = try Self.token(jti: jti, in: db) else { return nil }
            try db.execute(cached: "UPDATE token SET revoked_at = ? WHERE jti = ? AND revoked_at IS NULL", arguments: [now, jti])
            try Self.append(audit(token), in: db)
            return token
        }
    }

    // MARK: Audit

    public func appendAudit(_ events: [AuditEvent]) async throws {
        guard !events.isEmpty else { return }
        try await writes.write { db in try Self.append(events, in: db) }
    }

    /// Appends events after the newest record, inside the caller's transaction (which holds
    /// SQLite's write lock, so two appends cannot chain to the same record).
    static func append(_ events: [AuditEvent], in db: Database) throws {
        guard !events.isEmpty else { return }
        let last = try Row.fetchOne(db, cached: "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").map {
            (sequence: $0["seq"] as Int64, hash: $0["hash"] as String)
        }
        for r in try AuditChain.link(events, after: last) {
            let e = r.event
            try db.execute(cached: "INSERT INTO audit (seq, at, event, actor, subject, outcome, detail, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                arguments: [r.sequence, e.at, e.event, e.actor, e.subject, e.outcome, e.detail, r.hash])
        }
    }

    public func auditEvents(limit: Int) async throws -> [AuditRecord] {
        try await db.read { db in
            try Row.fetchAll(db, cached: "SELECT * FROM (SELECT * FROM audit ORDER BY seq DESC LIMIT ?) ORDER BY seq", arguments: [limit])
                .map(Self.auditRecord)
        }
    }

    public func auditRecords(after sequence: Int64, limit: Int) async throws -> [AuditRecord] {
        try await db.read { db in
            try Row.fetchAll(db, cached: "SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?", arguments: [sequence, limit])
                .map(Self.auditRecord)
        }
    }

    static func auditRecord(_ row: Row) -> AuditRecord {
        AuditRecord(
            sequence: row["seq"],
            event: AuditEvent(
                at: row["at"], event: row["event"], actor: row["actor"], subject: row["subject"], outcome: row["outcome"],
                detail: row["detail"]), hash: row["hash"])
    }
}
