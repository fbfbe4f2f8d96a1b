import ATHCore
import ATHStore
import Logging
import PostgresNIO

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
    let logger: Logger
    private let running: Task<Void, Never>

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
            try await store.transaction { connection in try await PostgresMigrations.apply(on: connection, logger: logger) }
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

    /// Closes every connection; operations after it fail.
    public func close() async {
        running.cancel()
        await running.value
    }

    /// One transaction: committed when `body` returns, rolled back when it throws (its error is
    /// rethrown as it was). Past the operation timeout, or when the database is unreachable,
    /// `StoreError.unavailable`.
    func transaction<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await bounded {
            do {
                return try await self.client.withTransaction(logger: self.logger) { connection in try await body(connection) }
            } catch let error as PostgresTransactionError {
                if let inner = error.closureError { throw Self.mapped(inner) }
                throw Self.mapped(error.beginError ?? error.commitError ?? error)
            }
        }
    }

    /// A read outside a transaction (one statement sees one snapshot).
    func read<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await bounded {
            do {
                return try await self.client.withConnection { connection in try await body(connection) }
            } catch {
                throw Self.mapped(error)
            }
        }
    }

    /// `body`, or `StoreError.unavailable` once the operation timeout passes (the pool waits for
    /// a connection without a limit of its own while the database is down).
    private func bounded<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let timeout = configuration.operationTimeout
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else {
                throw StoreError.unavailable("no answer within \(timeout)")
            }
            return value
        }
    }

    /// Connection failures and a server going away are `unavailable` (retry later); anything
    /// else is passed on.
    static func mapped(_ error: any Error) -> any Error {
        guard let error = error as? PSQLError else { return error }
        switch error.code {
        case .connectionError, .serverClosedConnection, .clientClosedConnection, .poolClosed, .uncleanShutdown:
            return StoreError.unavailable("\(error.code)")
        case .server:
            // Class 08 (connection exception), 57P01-57P03 (shutdown, cannot connect now).
            let state = error.serverInfo?[.sqlState] ?? ""
            if state.hasPrefix("08") || ["57P01", "57P02", "57P03"].contains(state) {
                return StoreError.unavailable(error.serverInfo?[.message] ?? state)
            }
            return error
        default:
            return error
        }
    }
}
