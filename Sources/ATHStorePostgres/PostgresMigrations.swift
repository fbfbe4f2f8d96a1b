import Logging
import PostgresNIO

/// The schema, as an ordered list of named steps applied once each. Instances that start
/// together on one database would race to apply the same step; the whole run holds a
/// transaction-scoped advisory lock, so the second waits and then finds the steps applied.
/// PostgreSQL's DDL is transactional: a step that fails leaves nothing behind.
enum PostgresMigrations {
    /// `pg_advisory_xact_lock` key for the migration run ("ATHM" in ASCII).
    static let lock: Int64 = 0x4154_484D

    /// Tables mirror `SQLiteStore`'s: columns for what is looked up, locked or changed; the rest
    /// of each record is its `StoredDocument`. The audit log refuses UPDATE and DELETE for every
    /// writer through PostgreSQL; someone who edits it anyway is caught by the hash chain.
    static let steps: [(name: String, statements: [String])] = [
        (
            "v1",
            [
                "CREATE TABLE nonce (key TEXT PRIMARY KEY, expires_at BIGINT NOT NULL)",
                "CREATE INDEX nonce_expiry ON nonce (expires_at)",
                """
                CREATE TABLE audit (
                    seq BIGINT PRIMARY KEY, at BIGINT NOT NULL, event TEXT NOT NULL, actor TEXT NOT NULL, subject TEXT NOT NULL,
                    outcome TEXT NOT NULL, detail TEXT NOT NULL, hash TEXT NOT NULL)
                """,
                """
                CREATE FUNCTION ath_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$
                """,
                "CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit FOR EACH STATEMENT EXECUTE FUNCTION ath_audit_append_only()",
                """
                CREATE TABLE account (
                    internal_id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, developer TEXT, created_at BIGINT NOT NULL,
                    suspended_at BIGINT, account_type TEXT)
                """,
                "CREATE TABLE external_id (value TEXT PRIMARY KEY, internal_id TEXT NOT NULL REFERENCES account, position INT NOT NULL)",
                "CREATE INDEX external_id_account ON external_id (internal_id)",
                "CREATE TABLE alias (value TEXT NOT NULL, internal_id TEXT NOT NULL REFERENCES account)",
                // Aliases are unique whatever their case (SQLite: COLLATE NOCASE).
                "CREATE UNIQUE INDEX alias_value ON alias (lower(value))",
                "CREATE INDEX alias_account ON alias (internal_id)",
                """
                CREATE TABLE account_key (
                    internal_id TEXT NOT NULL REFERENCES account, kid TEXT NOT NULL, pem TEXT NOT NULL, created_at BIGINT NOT NULL,
                    revoked_at BIGINT, added BIGSERIAL, PRIMARY KEY (internal_id, kid))
                """,
                """
                CREATE TABLE handshake (
                    id TEXT PRIMARY KEY, state TEXT NOT NULL, client_did TEXT NOT NULL, user_did TEXT, request_id TEXT UNIQUE,
                    deadline BIGINT NOT NULL, revision INT NOT NULL, data TEXT NOT NULL)
                """,
                "CREATE INDEX handshake_user ON handshake (user_did, state)",
                "CREATE INDEX handshake_deadline ON handshake (deadline)",
                """
                CREATE TABLE grant_record (
                    id TEXT PRIMARY KEY, handshake_id TEXT NOT NULL UNIQUE REFERENCES handshake, client_did TEXT NOT NULL,
                    user_did TEXT NOT NULL, credential_id TEXT NOT NULL, data TEXT NOT NULL, created_at BIGINT NOT NULL,
                    expires_at BIGINT NOT NULL, revoked_at BIGINT)
                """,
                "CREATE INDEX grant_credential ON grant_record (credential_id)",
                "CREATE INDEX grant_user ON grant_record (user_did)",
                "CREATE INDEX grant_client ON grant_record (client_did)",
                """
                CREATE TABLE session (
                    id TEXT PRIMARY KEY, grant_id TEXT NOT NULL REFERENCES grant_record, sealed_proof_key BYTEA NOT NULL,
                    expires_at BIGINT NOT NULL)
                """,
                """
                CREATE TABLE token (
                    jti TEXT PRIMARY KEY, grant_id TEXT NOT NULL REFERENCES grant_record, session_id TEXT NOT NULL REFERENCES session,
                    issued_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, revoked_at BIGINT)
                """,
                "CREATE INDEX token_grant ON token (grant_id)",
                """
                CREATE TABLE revoked_credential (
                    jti TEXT NOT NULL, user_did TEXT NOT NULL, revoked_at BIGINT NOT NULL, PRIMARY KEY (jti, user_did))
                """,
                "CREATE TABLE oauth_agent (client_id TEXT PRIMARY KEY, agent_id TEXT NOT NULL UNIQUE, data TEXT NOT NULL)",
                """
                CREATE TABLE oauth_session (
                    id TEXT PRIMARY KEY, provider_state TEXT NOT NULL UNIQUE, client_id TEXT NOT NULL, status TEXT NOT NULL,
                    expires_at BIGINT NOT NULL, data TEXT NOT NULL, sealed_grant BYTEA)
                """,
                "CREATE INDEX oauth_session_expiry ON oauth_session (expires_at)",
                "CREATE INDEX oauth_session_client ON oauth_session (client_id)",
                """
                CREATE TABLE oauth_token (
                    digest TEXT PRIMARY KEY, client_id TEXT NOT NULL, session_id TEXT NOT NULL, expires_at BIGINT NOT NULL,
                    revoked_at BIGINT, data TEXT NOT NULL)
                """,
                "CREATE INDEX oauth_token_expiry ON oauth_token (expires_at)",
                "CREATE INDEX oauth_token_client ON oauth_token (client_id)",
            ]
        ),
        (
            // Proof nonces every instance must see (`SharedProofNonces`): one row a protected request.
            "v2-proof-nonces",
            [
                "CREATE TABLE proof_nonce (key TEXT PRIMARY KEY, expires_at BIGINT NOT NULL)",
                "CREATE INDEX proof_nonce_expiry ON proof_nonce (expires_at)",
            ]
        ),
        (
            // Rate counters every instance adds to (`SharedRateCounters`).
            "v3-rate-counters",
            [
                "CREATE TABLE rate_counter (key TEXT NOT NULL, window_start BIGINT NOT NULL, count BIGINT NOT NULL, PRIMARY KEY (key, window_start))",
                "CREATE INDEX rate_counter_window ON rate_counter (window_start)",
            ]
        ),
        (
            // Audit records wait here, inside the transaction they belong to, for the chainer
            // (`PostgresStore+AuditLog`).
            "v4-audit-outbox",
            [
                """
                CREATE TABLE audit_outbox (
                    id BIGSERIAL PRIMARY KEY, at BIGINT NOT NULL, event TEXT NOT NULL, actor TEXT NOT NULL, subject TEXT NOT NULL,
                    outcome TEXT NOT NULL, detail TEXT NOT NULL)
                """
            ]
        ),
        (
            // The retention sweep finds ended grants by their end, and deletes their sessions
            // (tokens were indexed by grant from the start).
            "v5-grant-retention",
            [
                "CREATE INDEX grant_expiry ON grant_record (expires_at)",
                "CREATE INDEX grant_revoked ON grant_record (revoked_at) WHERE revoked_at IS NOT NULL",
                "CREATE INDEX session_grant ON session (grant_id)",
            ]
        ),
        (
            // The checks of a completion, for the statement that writes the grant (one round
            // trip where a transaction took six: BEGIN, the lock, two reads, the write, COMMIT).
            // The lock's key is `lockCredential`'s, so a revocation and a completion of one
            // credential take turns. A VOLATILE function's statements each see what was committed
            // before they began: the reads after the lock see a revocation whose holder released
            // it. Both parties' accounts are read FOR SHARE, held until the statement's
            // transaction ends: a suspension in progress is waited for, and one that starts waits
            // for the grant. NULL when the grant may be written, else 'revoked', or 'suspended:'
            // and the first suspended party.
            "v6-grant-refusal",
            [
                """
                CREATE FUNCTION ath_grant_refusal(credential TEXT, credential_user TEXT, parties TEXT[]) RETURNS TEXT
                LANGUAGE plpgsql VOLATILE AS $$
                DECLARE
                    suspended TEXT[];
                BEGIN
                    PERFORM pg_advisory_xact_lock(hashtextextended('credential' || chr(10) || credential || chr(10) || credential_user, 0));
                    IF EXISTS (SELECT 1 FROM revoked_credential WHERE jti = credential AND user_did = credential_user) THEN
                        RETURN 'revoked';
                    END IF;
                    SELECT array_agg(value) INTO suspended FROM (
                        SELECT e.value, a.suspended_at IS NOT NULL AS is_suspended FROM external_id e JOIN account a USING (internal_id)
                        WHERE e.value = ANY(parties) FOR SHARE OF a) locked
                    WHERE is_suspended;
                    FOR i IN 1 .. coalesce(array_length(parties, 1), 0) LOOP
                        IF parties[i] = ANY(suspended) THEN RETURN 'suspended:' || parties[i]; END IF;
                    END LOOP;
                    RETURN NULL;
                END $$
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
