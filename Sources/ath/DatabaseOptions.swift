import ATHGateway
import ArgumentParser

/// `--database`: PostgreSQL instead of the SQLite file, for several instances on one database.
struct DatabaseOptions: ParsableArguments {
    @Option(help: "PostgreSQL instead of the SQLite file: postgres://user@host:5432/database?sslmode=require (several instances may share it).")
    var database: String?
    @Option(help: "File holding the database password (kept out of the URL, the command line and the logs).")
    var databasePasswordFile: String?
    @Option(help: "Most connections to the database from this instance.") var databaseMaxConnections: Int = 20

    func location(sqlite path: String) throws -> StoreLocation {
        guard let database else {
            guard databasePasswordFile == nil else { throw ValidationError("--database-password-file needs --database") }
            return .sqlite(path: path)
        }
        guard (1...1000).contains(databaseMaxConnections) else { throw ValidationError("--database-max-connections must be 1-1000") }
        return .postgres(url: database, passwordFile: databasePasswordFile, maximumConnections: databaseMaxConnections, operationTimeoutSeconds: 5)
    }
}
