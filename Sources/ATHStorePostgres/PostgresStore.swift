import ATHCore
import ATHStore
import Logging
import Dispatch
import PostgresNIO
import Synchronization

/// The store on PostgreSQL, for several instances of a server on one database: every instance
/// sees the same single-use values and the same audit chain, because they are rows of one
/// database changed in transactions, never memory of one process.
///
/// Built aggregate by aggregate (docs/STORAGE.md); each passes the same conformance suite as
/// `SQLiteStore`. An operation that cannot reach the database within
/// `PostgresStoreConfiguration.operationTimeout` throws `StoreError.unavailable` and has written
/// nothing (its transaction never committed).
public final class PostgresStore: Sendable {
    let client: PostgresClient
    let configuration: PostgresStoreConfiguration
    /// Every call's operation timeout, on one clock.
    let deadlines = OperationDeadlines()
    let logger: Logger
    private let running: Task<Void, Never>
    /// When this instance last put audit records in the outbox: its chainer runs often for a
    /// while after.
    /// (`DispatchTime` uptime nanoseconds; 0: never).
    let auditAppended = Atomic<UInt64>(0)
    private let chainer = Mutex<Task<Void, Never>?>(nil)

    private init(client: PostgresClient, configuration: PostgresStoreConfiguration, logger: Logger) {
        self.client = client
        self.configuration = configuration
        self.logger = logger
        running = Task { await client.run() }
    }

    /// Connects, checks the database answers, and brings its schema up to date (once, whatever
    /// the number of instances starting together). A database that cannot be reached is
    /// `StoreError.unavailable` naming it (without its password), after `operationTimeout`.
    public static func open(_ configuration: PostgresStoreConfiguration, logger: Logger = Logger(label: "ath.store.postgres")) async throws
        -> PostgresStore
    {
        let store = PostgresStore(client: PostgresClient(configuration: configuration.client), configuration: configuration, logger: logger)
        do {
            // Reachable at all, within a request's time; then the schema, which may wait longer:
            // instances starting together queue on the migration lock, the first creates every table.
            _ = try await store.read { connection in try await connection.value(Int32.self, "SELECT 1", logger) }
            try await store.transaction(timeout: max(configuration.operationTimeout, .seconds(60))) { connection in
                try await PostgresMigrations.apply(on: connection, logger: logger)
            }
            let chainer = store.chainInBackground()
            store.chainer.withLock { $0 = chainer }
        } catch {
            await store.close()
            if case StoreError.unavailable(let why) = error {
                throw StoreError.unavailable("cannot use the database at \(configuration.redacted): \(why)")
            }
            throw error
        }
        return store
    }

    public static func open(url: String, logger: Logger = Logger(label: "ath.store.postgres")) async throws -> PostgresStore {
        try await open(PostgresStoreConfiguration(url: url), logger: logger)
    }

    /// Chains what this instance left in the audit outbox (best effort: another instance, or
    /// this one started again, chains it otherwise), then closes every connection; operations
    /// after it fail.
    public func close() async {
        if let chainer = chainer.withLock({ $0 }) {
            chainer.cancel()
            await chainer.value
            _ = try? await chainOutbox(wait: false)
        }
        running.cancel()
        await running.value
    }

    /// One transaction: committed when `body` returns, rolled back when it throws (its error is
    /// rethrown as it was). Past the operation timeout, or when the database is unreachable,
    /// `StoreError.unavailable`, and the transaction rolls back (unless its COMMIT was already
    /// on its way, as with any client that stops waiting).
    func transaction<T: Sendable>(
        timeout: Duration? = nil, _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        try await bounded(timeout ?? configuration.operationTimeout) {
            do {
                return try await self.client.withTransaction(logger: self.logger) { connection in
                    // Past the timeout the caller was told "unavailable": a connection leased
                    // late, or a body that finishes late, rolls back instead of committing.
                    try Task.checkCancellation()
                    let value = try await body(connection)
                    try Task.checkCancellation()
                    return value
                }
            } catch let error as PostgresTransactionError {
                if let inner = error.closureError { throw self.mapped(inner) }
                throw self.mapped(error.beginError ?? error.commitError ?? error)
            }
        }
    }

    /// One statement that writes, outside an explicit transaction: a statement is atomic by
    /// itself, and BEGIN and COMMIT would be two more round trips. A connection leased after the
    /// timeout runs nothing.
    func statement<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await bounded(configuration.operationTimeout) {
            do {
                return try await self.client.withConnection { connection in
                    try Task.checkCancellation()
                    return try await body(connection)
                }
            } catch {
                throw self.mapped(error)
            }
        }
    }

    /// A read outside a transaction (one statement sees one snapshot).
    func read<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await bounded(configuration.operationTimeout) {
            do {
                return try await self.client.withConnection { connection in try await body(connection) }
            } catch {
                throw self.mapped(error)
            }
        }
    }

    /// `body`, or `StoreError.unavailable` once the operation timeout passes (the pool waits for
    /// a connection without a limit of its own while the database is down, and a query in flight
    /// waits for the server).
    private func bounded<T: Sendable>(_ timeout: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await deadlines.run(within: timeout, body)
    }

    /// Connection failures and a server going away are `unavailable` (retry later); anything
    /// else is passed on, and logged with the server's own words (PSQLError's description says
    /// nothing, to keep bound values out of messages that reach clients).
    func mapped(_ error: any Error) -> any Error {
        guard let error = error as? PSQLError else { return error }
        if let unavailable = Self.unavailable(error) { return unavailable }
        logger.error("database error: \(String(reflecting: error))")
        return error
    }

    /// `StoreError.unavailable` for an error that says the database cannot be reached now.
    static func unavailable(_ error: PSQLError) -> StoreError? {
        switch error.code {
        case .connectionError, .serverClosedConnection, .clientClosedConnection, .poolClosed, .uncleanShutdown:
            return StoreError.unavailable("\(error.code)")
        case .server:
            // Class 08 (connection exception), 57P01-57P03 (shutdown, cannot connect now).
            let state = error.serverInfo?[.sqlState] ?? ""
            if state.hasPrefix("08") || ["57P01", "57P02", "57P03"].contains(state) {
                return StoreError.unavailable(error.serverInfo?[.message] ?? state)
            }
            return nil
        default:
            return nil
        }
    }
}

extension PostgresConnection {
    /// Every row of `query`, each readable by column name.
    func rows(_ query: PostgresQuery, _ logger: Logger) async throws -> [PostgresRandomAccessRow] {
        try await self.query(query, logger: logger).collect().map { $0.makeRandomAccess() }
    }

    /// The first column of the first row, if any.
    func value<T: PostgresDecodable>(_ type: T.Type, _ query: PostgresQuery, _ logger: Logger) async throws -> T? {
        guard let row = try await self.query(query, logger: logger).collect().first else { return nil }
        return try row.makeRandomAccess()[0].decode(T.self)
    }

    /// The first column of every row.
    func values<T: PostgresDecodable>(_ type: T.Type, _ query: PostgresQuery, _ logger: Logger) async throws -> [T] {
        try await self.query(query, logger: logger).collect().map { try $0.makeRandomAccess()[0].decode(T.self) }
    }

    /// Runs a statement with `RETURNING`; how many rows it returned (changed).
    @discardableResult
    func changed(_ query: PostgresQuery, _ logger: Logger) async throws -> Int {
        try await self.query(query, logger: logger).collect().count
    }
}

extension PSQLError {
    /// A unique or primary key violation (23505): what `StoreError.duplicate` reports.
    var isUniqueViolation: Bool { code == .server && serverInfo?[.sqlState] == "23505" }
}
