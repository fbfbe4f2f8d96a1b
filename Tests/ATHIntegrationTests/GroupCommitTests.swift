import ATHStore
import Foundation
import GRDB
import Testing

@testable import ATHStoreSQLite

/// The SQLite store's shared transactions (`GroupCommit`): writes that wait together commit
/// together, yet each is answered as if it had had a transaction of its own.
@Suite(.timeLimit(.minutes(1))) struct GroupCommitTests {
    /// A pool with a table of names and one with a deferred foreign key (checked only at COMMIT).
    static func pool() throws -> (DatabasePool, String) {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ath-group-commit-\(UUID().uuidString).sqlite").path
        let pool = try DatabasePool(path: path)
        try pool.write { db in
            try db.execute(
                sql: """
                    CREATE TABLE name (value TEXT PRIMARY KEY NOT NULL);
                    CREATE TABLE parent (id INTEGER PRIMARY KEY);
                    CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);
                    """)
        }
        return (pool, path)
    }

    static func names(_ pool: DatabasePool) throws -> Set<String> {
        Set(try pool.read { try String.fetchAll($0, sql: "SELECT value FROM name") })
    }

    struct Refused: Error, Equatable { let name: String }

    /// Holds GRDB's writer queue until `release`, so that the writes sent meanwhile all wait and
    /// form one batch: what a busy writer does under load, made certain.
    final class HeldWriter: Sendable {
        let gate = DispatchSemaphore(value: 0)
        init(_ pool: DatabasePool) { pool.asyncWriteWithoutTransaction { [gate] _ in gate.wait() } }
        func release() { gate.signal() }
    }

    /// Sends each write as a task of its own once the writer is held, waits until all of them
    /// queue, then lets the writer go: they run in one transaction.
    static func inOneBatch(
        _ commits: GroupCommit, _ pool: DatabasePool, _ writes: [@Sendable (Database) throws -> Void]
    ) async throws -> [Result<Void, any Error>] {
        let held = HeldWriter(pool)
        let before = commits.transactions.load(ordering: .relaxed)
        let tasks = writes.map { body in Task { () -> Result<Void, any Error> in
            do { return .success(try await commits.write(body)) } catch { return .failure(error) }
        } }
        let deadline = ContinuousClock.now + .seconds(10)
        while commits.waiting < writes.count && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        #expect(commits.waiting == writes.count)
        held.release()
        var results: [Result<Void, any Error>] = []
        for task in tasks { results.append(await task.value) }
        #expect(commits.transactions.load(ordering: .relaxed) - before == 1, "the waiting writes shared one transaction")
        return results
    }

    static func insert(_ name: String) -> @Sendable (Database) throws -> Void {
        { db in try db.execute(sql: "INSERT INTO name (value) VALUES (?)", arguments: [name]) }
    }

    @Test func writesThatWaitTogetherCommitInOneTransactionAndAllLand() async throws {
        let (pool, _) = try Self.pool()
        let commits = GroupCommit(pool)
        let names = (0..<40).map { "n\($0)" }
        let results = try await Self.inOneBatch(commits, pool, names.map(Self.insert))
        #expect(results.allSatisfy { if case .success = $0 { true } else { false } })
        #expect(try Self.names(pool) == Set(names))
    }

    /// A write that throws in a batch is undone to its savepoint and gets its own error; the
    /// writes before and after it land.
    @Test func aWriteThatThrowsIsUndoneAloneAndTheOthersLand() async throws {
        let (pool, _) = try Self.pool()
        let commits = GroupCommit(pool)
        let refusing: @Sendable (Database) throws -> Void = { db in
            try db.execute(sql: "INSERT INTO name (value) VALUES ('b')")
            throw Refused(name: "b")
        }
        let results = try await Self.inOneBatch(commits, pool, [Self.insert("a"), refusing, Self.insert("c")])
        #expect(throws: Refused(name: "b")) { try results[1].get() }
        try results[0].get()
        try results[2].get()
        #expect(try Self.names(pool) == ["a", "c"])
    }

    /// Writes run in the order they came: a later one sees what an earlier one in the same batch
    /// wrote, as a check-and-set must.
    @Test func aLaterWriteInTheBatchSeesAnEarlierOne() async throws {
        let (pool, _) = try Self.pool()
        let commits = GroupCommit(pool)
        let duplicate = Self.insert("a")
        let results = try await Self.inOneBatch(commits, pool, [Self.insert("a"), duplicate])
        try results[0].get()
        #expect(throws: DatabaseError.self) { try results[1].get() }
        #expect(try Self.names(pool) == ["a"])
    }

    /// When the shared commit fails, no write in it happened, and every caller is told so.
    @Test func aCommitThatFailsFailsEveryWriteInItsBatch() async throws {
        let (pool, _) = try Self.pool()
        let commits = GroupCommit(pool)
        let orphan: @Sendable (Database) throws -> Void = { db in
            try db.execute(sql: "INSERT INTO child (id, parent) VALUES (1, 99)")
        }
        let results = try await Self.inOneBatch(commits, pool, [Self.insert("a"), orphan, Self.insert("c")])
        for result in results {
            #expect(throws: DatabaseError.self) { try result.get() }
        }
        #expect(try Self.names(pool).isEmpty)
        #expect(try await pool.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM child") } == 0)
        // The writer is usable again.
        try await commits.write(Self.insert("d"))
        #expect(try Self.names(pool) == ["d"])
    }

    /// A write alone in its transaction runs without a savepoint: when it throws, the transaction
    /// is rolled back, and nothing it wrote before throwing stays.
    @Test func aLoneWriteThatThrowsLeavesNothing() async throws {
        let (pool, _) = try Self.pool()
        let commits = GroupCommit(pool)
        await #expect(throws: Refused(name: "x")) {
            try await commits.write { db in
                try db.execute(sql: "INSERT INTO name (value) VALUES ('x')")
                throw Refused(name: "x")
            }
        }
        #expect(try Self.names(pool).isEmpty)
        let value = try await commits.write { db in
            try db.execute(sql: "INSERT INTO name (value) VALUES ('y')")
            return 7
        }
        #expect(value == 7)
        #expect(try Self.names(pool) == ["y"])
    }

    /// Batches take turns with GRDB's other writes: a write queued for the writer while a batch
    /// ran (here the retention sweep's kind, `DatabasePool.write`) goes before the next batch, not
    /// after every batch that requests keep forming.
    @Test func aBatchLetsTheWriterServeOthersBeforeTheNext() async throws {
        let (pool, _) = try Self.pool()
        let commits = GroupCommit(pool)
        let held = HeldWriter(pool)
        let started = DispatchSemaphore(value: 0)
        let finish = DispatchSemaphore(value: 0)
        let first = Task {
            try await commits.write { db in
                started.signal()
                finish.wait()
                try db.execute(sql: "INSERT INTO name (value) VALUES ('first')")
            }
        }
        while commits.waiting < 1 { try await Task.sleep(for: .milliseconds(5)) }
        held.release()
        await withCheckedContinuation { done in DispatchQueue.global().async { started.wait(); done.resume() } }
        // The first batch runs: another writer queues (at once: `asyncWrite` enqueues before it
        // returns), then another request's write.
        let otherDone = DispatchSemaphore(value: 0)
        pool.asyncWriteWithoutTransaction { db in
            try? db.execute(sql: "INSERT INTO name (value) VALUES ('other')")
            otherDone.signal()
        }
        let later = Task { try await commits.write(Self.insert("later")) }
        while commits.waiting < 1 { try await Task.sleep(for: .milliseconds(5)) }
        finish.signal()
        try await first.value
        try await later.value
        await withCheckedContinuation { done in DispatchQueue.global().async { otherDone.wait(); done.resume() } }
        let order = try await pool.read { try String.fetchAll($0, sql: "SELECT value FROM name ORDER BY rowid") }
        #expect(order == ["first", "other", "later"])
    }

    /// The store's writer syncs the log at every commit: GRDB opens it with NORMAL, under which
    /// a power cut can take back a commit.
    @Test func theStoreSyncsEveryCommit() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ath-sync-\(UUID().uuidString).sqlite").path
        let store = try SQLiteStore(path: path)
        let synchronous = try await store.db.writeWithoutTransaction { try Int.fetchOne($0, sql: "PRAGMA synchronous") }
        #expect(synchronous == 2, "2 is FULL")
    }
}
