import ATHStore
import ATHStorePostgres
import ATHStoreSQLite
import Foundation
import Logging

/// Where a server keeps its state: one SQLite file (one instance, the default) or a PostgreSQL
/// database (several instances behind a load balancer). `ath serve`, `ath gateway`, `ath authz`
/// and `ath audit` all open their store through this, so the choice means the same everywhere.
public enum StoreLocation: Sendable, Equatable {
    case sqlite(path: String)
    case postgres(url: String, passwordFile: String?, maximumConnections: Int, operationTimeoutSeconds: Int)

    /// An opened store and how to let it go.
    public struct Opened: Sendable {
        public let store: any ATHStore & OAuthAPIStore
        let postgres: PostgresStore?

        /// Closes the database connections (nothing to do for SQLite).
        public func close() async { await postgres?.close() }
    }

    /// Opens the store, bringing its schema up to date. A database that cannot be reached fails
    /// here (`StoreError.unavailable`, naming it without its password), not at the first request.
    public func open(logger: Logger = Logger(label: "ath.store")) async throws -> Opened {
        switch self {
        case .sqlite(let path):
            return Opened(store: try SQLiteStore(path: path), postgres: nil)
        case .postgres(let url, let passwordFile, let maximumConnections, let timeout):
            var configuration = try PostgresStoreConfiguration(url: url)
            if let passwordFile {
                guard let text = try? String(contentsOfFile: passwordFile, encoding: .utf8) else {
                    throw StoreError.unavailable("cannot read the database password file \(passwordFile)")
                }
                configuration.password = text.trimmingCharacters(in: .newlines)
            }
            configuration.maximumConnections = maximumConnections
            configuration.operationTimeout = .seconds(timeout)
            let store = try await PostgresStore.open(configuration, logger: logger)
            return Opened(store: store, postgres: store)
        }
    }

    /// The location for logs: a path, or the URL without its password.
    public var description: String {
        switch self {
        case .sqlite(let path): return path
        case .postgres(let url, _, _, _): return (try? PostgresStoreConfiguration(url: url).redacted) ?? "postgres://…"
        }
    }
}
