import GRDB

// Every statement the store runs outside its migrations is compiled once per connection and kept
// (`cachedStatement`). Compiled again on every call, as `execute(sql:)` and `fetchOne(_:sql:)`
// do, parsing SQL and GRDB's authorizer (which runs while a statement compiles) took about a sixth
// of the server's CPU per HTTP handshake (docs/PERFORMANCE.md). A kept statement stays valid
// across schema changes: SQLite prepares it again by itself when the schema it was compiled
// against changed. Only single statements are kept; migrations run their scripts as before.

extension Database {
    func execute(cached sql: String, arguments: StatementArguments = StatementArguments()) throws {
        try cachedStatement(sql: sql).execute(arguments: arguments)
    }
}

extension Row {
    static func fetchOne(_ db: Database, cached sql: String, arguments: StatementArguments = StatementArguments()) throws -> Row? {
        try fetchOne(db.cachedStatement(sql: sql), arguments: arguments)
    }

    static func fetchAll(_ db: Database, cached sql: String, arguments: StatementArguments = StatementArguments()) throws -> [Row] {
        try fetchAll(db.cachedStatement(sql: sql), arguments: arguments)
    }
}

extension DatabaseValueConvertible {
    static func fetchOne(_ db: Database, cached sql: String, arguments: StatementArguments = StatementArguments()) throws -> Self? {
        try fetchOne(db.cachedStatement(sql: sql), arguments: arguments)
    }

    static func fetchAll(_ db: Database, cached sql: String, arguments: StatementArguments = StatementArguments()) throws -> [Self] {
        try fetchAll(db.cachedStatement(sql: sql), arguments: arguments)
    }
}
