import ATHStore
import PostgresNIO

/// One gapless chain for every instance: a transaction that appends takes a transaction-scoped
/// advisory lock first, then reads the newest record (READ COMMITTED: it sees the last holder's
/// commit) and links after it. Appends are serialized across instances for the time between
/// the lock and the commit of the transaction that holds it; docs/STORAGE.md measures what that
/// costs and says when an outbox with one chainer would be worth it.
extension PostgresStore: AuditLog {
    /// `pg_advisory_xact_lock` key of the audit chain ("ATHA").
    static let auditLock: Int64 = 0x4154_4841

    public func appendAudit(_ events: [AuditEvent]) async throws {
        guard !events.isEmpty else { return }
        try await transaction { connection in try await Self.append(events, on: connection, logger: self.logger) }
    }

    /// Appends inside the caller's transaction, holding the chain's lock until it ends.
    static func append(_ events: [AuditEvent], on connection: PostgresConnection, logger: Logger) async throws {
        guard !events.isEmpty else { return }
        try await connection.query("SELECT pg_advisory_xact_lock(\(auditLock))", logger: logger)
        var last: (sequence: Int64, hash: String)?
        for try await (sequence, hash) in try await connection.query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", logger: logger)
            .decode((Int64, String).self)
        {
            last = (sequence, hash)
        }
        for r in try AuditChain.link(events, after: last) {
            let e = r.event
            try await connection.query(
                """
                INSERT INTO audit (seq, at, event, actor, subject, outcome, detail, hash)
                VALUES (\(r.sequence), \(e.at), \(e.event), \(e.actor), \(e.subject), \(e.outcome), \(e.detail), \(r.hash))
                """, logger: logger)
        }
    }

    public func auditEvents(limit: Int) async throws -> [AuditRecord] {
        try await records("SELECT * FROM (SELECT seq, at, event, actor, subject, outcome, detail, hash FROM audit ORDER BY seq DESC LIMIT \(limit)) r ORDER BY seq")
    }

    public func auditRecords(after sequence: Int64, limit: Int) async throws -> [AuditRecord] {
        try await records("SELECT seq, at, event, actor, subject, outcome, detail, hash FROM audit WHERE seq > \(sequence) ORDER BY seq LIMIT \(limit)")
    }

    private func records(_ query: PostgresQuery) async throws -> [AuditRecord] {
        try await read { connection in
            var out: [AuditRecord] = []
            for try await (seq, at, event, actor, subject, outcome, detail, hash) in try await connection.query(query, logger: self.logger)
                .decode((Int64, Int64, String, String, String, String, String, String).self)
            {
                out.append(
                    AuditRecord(
                        sequence: seq, event: AuditEvent(at: at, event: event, actor: actor, subject: subject, outcome: outcome, detail: detail),
                        hash: hash))
            }
            return out
        }
    }
}
