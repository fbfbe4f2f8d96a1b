import GRDB
import Synchronization

/// Group commit: writes that arrive while the writer is busy share its next transaction, so they
/// share one commit and one `fdatasync` of the log, one hop to GRDB's writer queue, and the pages
/// they both touch (the audit log's last page, the indexes' pages) are written to the log once.
///
/// Each write still stands alone. It runs inside a savepoint of the shared transaction: one that
/// throws is rolled back to its savepoint and gets its own error, and the others go on. None is
/// answered before the transaction commits, so no caller is told a write happened that a failed
/// commit then undid; when the commit fails, every write in the batch gets that error and none of
/// them is in the store. Writes run in the order they arrived, so a check-and-set sees every write
/// before it, as with a transaction each.
///
/// Under load the writer is busy most of the time (above all while it waits for the disk to sync),
/// so batches form by themselves; a lone write waits for nothing and pays no savepoint.
final class GroupCommit: Sendable {
    private let writer: DatabasePool
    /// Large enough to take what piles up during one sync; bounded so that one transaction, and
    /// the delay of the first write in it, stay small.
    static let largestBatch = 64

    private struct Write: Sendable {
        /// Runs the write's body (in a savepoint unless it is `alone` in its transaction); what it
        /// returns answers the caller once the transaction's fate is known, and says whether the body threw.
        let run: @Sendable (Database, _ alone: Bool) -> (Answer, threw: Bool)
        let fail: @Sendable (any Error) -> Void
    }

    /// Answers a caller: with the body's own error if it threw, else with its result, or with the
    /// error that undid the transaction.
    private typealias Answer = @Sendable (_ transactionError: (any Error)?) -> Void

    private struct Queue: ~Copyable {
        var waiting: [Write] = []
        var draining = false
    }
    private let queue = Mutex(Queue())
    /// Transactions begun so far, and writes waiting for one: what a test or a benchmark reads to
    /// see batches form.
    let transactions = Atomic<Int>(0)
    var waiting: Int { queue.withLock { $0.waiting.count } }

    init(_ writer: DatabasePool) {
        self.writer = writer
    }

    /// Runs `body` in a transaction shared with the writes queued beside it, and returns once that
    /// transaction has committed (or throws what undid it).
    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let write = Write(
                run: { db, alone in
                    let value: T
                    do {
                        value = try alone ? body(db) : Self.inSavepoint(db) { try body(db) }
                    } catch {
                        return ({ _ in continuation.resume(throwing: error) }, true)
                    }
                    let answer: Answer = { transactionError in
                        if let transactionError { continuation.resume(throwing: transactionError) } else { continuation.resume(returning: value) }
                    }
                    return (answer, false)
                },
                fail: { continuation.resume(throwing: $0) })
            let start = queue.withLock { q in
                q.waiting.append(write)
                defer { q.draining = true }
                return !q.draining
            }
            if start { writer.asyncWriteWithoutTransaction { db in self.drain(db) } }
        }
    }

    /// On the writer's queue: one batch, then, if more writes wait, the next batch queued behind
    /// whatever else waits for GRDB's writer (the retention sweep's transactions), which a loop
    /// over the batches would hold off for as long as requests keep coming.
    private func drain(_ db: Database) {
        let batch: [Write] = queue.withLock { q in
            let taken = Array(q.waiting.prefix(Self.largestBatch))
            q.waiting.removeFirst(taken.count)
            if taken.isEmpty { q.draining = false }
            return taken
        }
        guard !batch.isEmpty else { return }
        commit(batch, in: db)
        let more = queue.withLock { q in
            if q.waiting.isEmpty { q.draining = false }
            return q.draining
        }
        if more { writer.asyncWriteWithoutTransaction { db in self.drain(db) } }
    }

    private func commit(_ batch: [Write], in db: Database) {
        var answers: [Answer] = []
        answers.reserveCapacity(batch.count)
        let alone = batch.count == 1
        do {
            transactions.wrappingAdd(1, ordering: .relaxed)
            try db.execute(cached: "BEGIN IMMEDIATE")
            for write in batch {
                let (answer, threw) = write.run(db, alone)
                answers.append(answer)
                // A lone write ran without a savepoint: what it did before it threw goes with the
                // transaction, and it gets its own error.
                if alone && threw {
                    try? db.execute(cached: "ROLLBACK")
                    answer(nil)
                    return
                }
                // SQLite ends the whole transaction by itself on some errors (a full disk, an I/O
                // error): the writes before are gone, and those after must not run outside it.
                guard db.isInsideTransaction else {
                    throw DatabaseError(resultCode: .SQLITE_ABORT, message: "the shared transaction was rolled back")
                }
            }
            try db.execute(cached: "COMMIT")
        } catch {
            if db.isInsideTransaction { try? db.execute(cached: "ROLLBACK") }
            for answer in answers { answer(error) }
            for write in batch.dropFirst(answers.count) { write.fail(error) }
            return
        }
        for answer in answers { answer(nil) }
    }

    private static func inSavepoint<T>(_ db: Database, _ body: () throws -> T) throws -> T {
        try db.execute(cached: "SAVEPOINT write")
        do {
            let value = try body()
            try db.execute(cached: "RELEASE write")
            return value
        } catch {
            if db.isInsideTransaction {
                try? db.execute(cached: "ROLLBACK TO write")
                try? db.execute(cached: "RELEASE write")
            }
            throw error
        }
    }
}
