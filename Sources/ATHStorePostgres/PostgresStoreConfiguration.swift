import Foundation
import NIOSSL
import PostgresNIO

/// Where the store's database is and how to reach it, from a libpq-style URL
/// (`postgres://user:password@host:5432/database?sslmode=require`), the form operators already
/// write for psql and every other PostgreSQL client.
public struct PostgresStoreConfiguration: Sendable {
    public var host: String
    public var port: Int
    public var username: String
    public var password: String?
    public var database: String?
    public var tls: TLSMode
    /// The most connections this instance opens; several instances share the server's
    /// `max_connections`, so this times the instance count must stay below it.
    public var maximumConnections: Int = 20
    /// How long an operation may wait for a connection and its answer before it fails with
    /// `StoreError.unavailable`: a database that is down makes requests fail, never hang.
    public var operationTimeout: Duration = .seconds(5)

    public enum TLSMode: String, Sendable {
        /// Plain TCP (a database on loopback or a private network the operator trusts).
        case disable
        /// TLS when the server offers it.
        case prefer
        /// TLS with the server's certificate verified against the system's roots.
        case require
    }

    /// `sslmode` may be disable, prefer, require or verify-full (require verifies already); without
    /// it, a loopback host gets prefer and any other host require: credentials never cross a
    /// network in the clear unless the URL says so.
    public init(url: String) throws {
        guard let components = URLComponents(string: url), ["postgres", "postgresql"].contains(components.scheme ?? ""),
            let host = components.host, !host.isEmpty
        else { throw InvalidDatabaseURL("the database URL must be postgres://user[:password]@host[:port]/database") }
        guard let user = components.user, !user.isEmpty else { throw InvalidDatabaseURL("the database URL names no user") }
        self.host = host
        port = components.port ?? 5432
        guard (1...65535).contains(port) else { throw InvalidDatabaseURL("the database URL's port must be 1-65535") }
        username = user.removingPercentEncoding ?? user
        password = components.password.map { $0.removingPercentEncoding ?? $0 }
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        database = path.isEmpty ? nil : path
        let loopback = ["localhost", "127.0.0.1", "::1", "[::1]"].contains(host)
        switch components.queryItems?.first(where: { $0.name == "sslmode" })?.value {
        case nil: tls = loopback ? .prefer : .require
        case "disable": tls = .disable
        case "prefer", "allow": tls = .prefer
        case "require", "verify-ca", "verify-full": tls = .require
        case let other?: throw InvalidDatabaseURL("sslmode \(other) is not disable, prefer, require or verify-full")
        }
    }

    /// The URL without its password, for logs and errors.
    public var redacted: String { "postgres://\(username)@\(host):\(port)/\(database ?? "")" }

    var client: PostgresClient.Configuration {
        let mode: PostgresClient.Configuration.TLS
        switch tls {
        case .disable: mode = .disable
        case .prefer: mode = .prefer(.makeClientConfiguration())
        case .require: mode = .require(.makeClientConfiguration())
        }
        var configuration = PostgresClient.Configuration(host: host, port: port, username: username, password: password, database: database, tls: mode)
        configuration.options.maximumConnections = maximumConnections
        return configuration
    }

    /// For a connection of its own (outside the pool), as LISTEN needs.
    func connection() throws -> PostgresConnection.Configuration {
        let mode: PostgresConnection.Configuration.TLS
        switch tls {
        case .disable: mode = .disable
        case .prefer: mode = .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
        case .require: mode = .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
        }
        return PostgresConnection.Configuration(host: host, port: port, username: username, password: password, database: database, tls: mode)
    }
}

/// A database URL that cannot be used, and why (the password never appears here).
public struct InvalidDatabaseURL: Error, CustomStringConvertible, Equatable {
    public var description: String

    init(_ description: String) { self.description = description }
}
