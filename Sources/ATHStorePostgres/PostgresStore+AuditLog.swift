import ATHStore
import Foundation
import PostgresNIO

/// One gapless chain for every instance, written in two stages so that no use case waits for
/// another's commit:
///
/// 1. A transaction that has audit records inserts them into `audit_outbox`, in the same
///    transaction as what they record (one statement, whatever their number). Nothing is
///    serialized: the outbox has no chain.
/// 2. One chainer at a time, whichever instance holds the chain's advisory lock, moves what
///    the outbox holds into `audit`, numbering and hashing each record after the last
///    (`AuditChain`), and deletes it from the outbox, in one transaction.
///
/// Each instance chains every 100 ms while it has appended in the last two seconds, and every
/// five seconds in any case (what a stopped instance left). A read of the log chains first,
/// waiting for the lock, so it sees every record committed before it. Before, each audited
/// transaction took the lock itself, which serialized every instance's handshakes from the lock
/// to their commit: docs/STORAGE.md has the measurements.
extension PostgresStore: AuditLog {
    /// `pg_advisory_xact_lock` key of the audit chain ("ATHA").
    static let auditLock: Int64 = 0x4154_4841
    /// Records moved by one statement of the chainer.
    static let chainBatch = 1000

    public func appendAudit(_ events: [AuditEvent]) async throws {
        guard !events.isEmpty else { return }
        try await transaction { connection in try await self.append(events, on: connection) }
    }

    /// Inside the caller's transaction: into the outbox, chained after its commit.
    func append(_ events: [AuditEvent], on connection: PostgresConnection) async throws {
        guard !events.isEmpty else { return }
        try await connection.query("INSERT INTO audit_outbox \(outboxRows: events)", logger: logger)
        appended(events)
    }

    /// Tells the chainer that `events` were appended (it chains soon after appends).
    func appended(_ events: [AuditEvent]) {
        guard !events.isEmpty else { return }
        auditAppended.store(DispatchTime.now().uptimeNanoseconds, ordering: .relaxed)
    }

    /// Moves what the outbox holds into the chain. With `wait`, after whichever chainer holds
    /// the lock; without, nothing when another does (nil). Returns the records chained.
    @discardableResult
    func chainOutbox(wait: Bool) async throws -> Int? {
        var total = 0
        while true {
            // A bounded amount per transaction, so that a long backlog never outlasts the
            // operation timeout.
            let moved: Int? = try await transaction { c -> Int? in
                if wait {
                    try await c.query("SELECT pg_advisory_xact_lock(\(Self.auditLock))", logger: self.logger)
                } else if try await c.value(Bool.self, "SELECT pg_try_advisory_xact_lock(\(Self.auditLock))", self.logger) != true {
                    return nil
                }
                var last: (sequence: Int64, hash: String)?
                var moved = 0
                for _ in 0..<10 {
                    let outbox = try await c.query(
                        "SELECT id, at, event, actor, subject, outcome, detail FROM audit_outbox ORDER BY id LIMIT \(Self.chainBatch)",
                        logger: self.logger)
                    var rows: [(Int64, Int64, String, String, String, String, String)] = []
                    for try await row in outbox.decode((Int64, Int64, String, String, String, String, String).self) { rows.append(row) }
                    guard !rows.isEmpty else { break }
                    if last == nil {
                        for try await row in try await c.query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", logger: self.logger)
                            .decode((Int64, String).self)
                        {
                            last = (row.0, row.1)
                        }
                    }
                    let events = rows.map { AuditEvent(at: $0.1, event: $0.2, actor: $0.3, subject: $0.4, outcome: $0.5, detail: $0.6) }
                    let linked = try AuditChain.link(events, after: last)
                    try await c.query(
                        """
                        INSERT INTO audit (seq, at, event, actor, subject, outcome, detail, hash)
                        SELECT * FROM unnest(\(linked.map(\.sequence)), \(events.map(\.at)), \(events.map(\.event)), \(events.map(\.actor)),
                                             \(events.map(\.subject)), \(events.map(\.outcome)), \(events.map(\.detail)), \(linked.map(\.hash)))
                        """, logger: self.logger)
                    try await c.query("DELETE FROM audit_outbox WHERE id = ANY(\(rows.map(\.0)))", logger: self.logger)
                    last = linked.last.map { ($0.sequence, $0.hash) }
                    moved += rows.count
                    guard rows.count == Self.chainBatch else { break }
                }
                return moved
            }
            guard let moved else { return total == 0 ? nil : total }
            total += moved
            if moved < 10 * Self.chainBatch { return total }
        }
    }

    /// The chainer of this instance (see the extension's comment); stopped by `close`.
    func chainInBackground() -> Task<Void, Never> {
        Task { [weak self] in
            var sinceSweep = Duration.zero
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(100))
                guard let self else { return }
                sinceSweep += .milliseconds(100)
                let appended = self.auditAppended.load(ordering: .relaxed)
                let recent = appended > 0 && DispatchTime.now().uptimeNanoseconds - appended < 2_000_000_000
                guard recent || sinceSweep >= .seconds(5) else { continue }
                sinceSweep = .zero
                do {
                    try await self.chainOutbox(wait: false)
                } catch {
                    if !Task.isCancelled { self.logger.warning("the audit chainer failed; trying again: \(error)") }
                }
            }
        }
    }

    public func auditEvents(limit: Int) async throws -> [AuditRecord] {
        try await chainOutbox(wait: true)
        return try await records(
            "SELECT * FROM (SELECT seq, at, event, actor, subject, outcome, detail, hash FROM audit ORDER BY seq DESC LIMIT \(limit)) r ORDER BY seq")
    }

    public func auditRecords(after sequence: Int64, limit: Int) async throws -> [AuditRecord] {
        try await chainOutbox(wait: true)
        return try await records(
            "SELECT seq, at, event, actor, subject, outcome, detail, hash FROM audit WHERE seq > \(sequence) ORDER BY seq LIMIT \(limit)")
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

extension PostgresQuery.StringInterpolation {
    /// The outbox's columns and rows for `events`, in their order, after `INSERT INTO
    /// audit_outbox`; with `when`, only if the statement's CTE of that name returned a row. So a
    /// use case that is one statement appends its audit records in the same statement (one round
    /// trip, atomic without a transaction).
    mutating func appendInterpolation(outboxRows events: [AuditEvent], when cte: String? = nil) {
        appendLiteral("(at, event, actor, subject, outcome, detail) SELECT at, event, actor, subject, outcome, detail FROM unnest(")
        appendInterpolation(events.map(\.at))
        for column in [events.map(\.event), events.map(\.actor), events.map(\.subject), events.map(\.outcome), events.map(\.detail)] {
            appendLiteral(", ")
            appendInterpolation(column)
        }
        appendLiteral(") WITH ORDINALITY AS r(at, event, actor, subject, outcome, detail, position)")
        if let cte { appendLiteral(" WHERE EXISTS (SELECT 1 FROM \(cte))") }
        appendLiteral(" ORDER BY position")
    }
}
