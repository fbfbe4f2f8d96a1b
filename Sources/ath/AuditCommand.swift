import ATHCore
import ATHStore
import ATHGateway
import ArgumentParser
import Foundation

/// `ath audit ...`: the operator's view of a store's audit log, read from the store itself (the
/// log is not served over HTTP: it names every party, and only the platform's operators see it).
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "List and verify the hash-chained audit log of a store.", subcommands: [List.self, Verify.self],
        defaultSubcommand: List.self)

    struct StoreOption: ParsableArguments {
        @Option(help: "The SQLite store `ath serve` uses.") var store: String = "ath.sqlite"
        @OptionGroup var database: DatabaseOptions

        /// An existing store only: opening a path that holds none would create an empty one.
        func open() async throws -> any AuditLog {
            let location = try database.location(sqlite: store)
            if case .sqlite = location, !FileManager.default.fileExists(atPath: store) { throw ValidationError("no store at \(store)") }
            return try await location.open().store
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print audit records, oldest first (the newest --limit by default).")
        @OptionGroup var store: StoreOption
        @Option(help: "At most this many records.") var limit: Int = 50
        @Option(help: "Only records numbered above this one (pages through the whole log).") var after: Int64?
        @Option(help: "Only events starting with this (e.g. grant., handshake., access.refused).") var event: String?
        @Option(help: "Only records whose actor or subject is this (a DID, a grant or handshake id).") var party: String?
        @Flag(help: "One JSON object a line.") var json = false

        func validate() throws {
            guard limit > 0 else { throw ValidationError("--limit must be positive") }
        }

        func run() async throws {
            let db = try await store.open()
            let filtered = event != nil || party != nil
            var shown: [AuditRecord] = []
            if after == nil && !filtered {
                shown = try await db.auditEvents(limit: limit)
            } else {
                // Filters read forward through the log in pages; without --after the newest matches are kept.
                var cursor = after ?? 0
                while true {
                    let page = try await db.auditRecords(after: cursor, limit: 1_000)
                    shown += page.filter(matches)
                    if after != nil && shown.count >= limit { break }
                    if after == nil && shown.count > limit { shown.removeFirst(shown.count - limit) }
                    guard let last = page.last, page.count == 1_000 else { break }
                    cursor = last.sequence
                }
                shown = after != nil ? Array(shown.prefix(limit)) : shown
            }
            for record in shown { print(try Self.line(record, json: json)) }
        }

        func matches(_ r: AuditRecord) -> Bool {
            (event.map { r.event.event.hasPrefix($0) } ?? true) && (party.map { r.event.actor == $0 || r.event.subject == $0 } ?? true)
        }

        static func line(_ r: AuditRecord, json: Bool) throws -> String {
            if json { return String(decoding: try CanonicalJSON.bytes(of: r), as: UTF8.self) }
            let e = r.event
            let when = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: TimeInterval(e.at)))
            return "\(r.sequence)\t\(when)\t\(e.event)\t\(e.actor)\t\(e.subject)\t\(e.outcome)" + (e.detail.isEmpty ? "" : "\t\(e.detail)")
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check the whole chain; prints the head (sequence and hash) to keep as an anchor. Exits 1 when broken.")
        @OptionGroup var store: StoreOption
        @Option(help: "An anchor kept from an earlier run, <sequence>:<hash>: that record must still be there, unchanged.")
        var anchor: String?
        @Flag(help: "Print the result as JSON.") var json = false

        func run() async throws {
            var expected: (sequence: Int64, hash: String)?
            if let anchor {
                let parts = anchor.split(separator: ":", maxSplits: 1)
                guard parts.count == 2, let sequence = Int64(parts[0]), sequence > 0 else {
                    throw ValidationError("--anchor is <sequence>:<hash>, as `ath audit verify` prints it")
                }
                expected = (sequence, String(parts[1]))
            }
            let result = try await AuditChain.verify(try await store.open(), anchor: expected)
            if json {
                print(String(decoding: try CanonicalJSON.bytes(of: result), as: UTF8.self))
            } else if let broken = result.brokenAt {
                print("BROKEN at record \(broken): \(result.problem ?? "")")
                print("\(result.verified) records verified before it; last good: \(result.headSequence):\(result.headHash)")
            } else {
                print("intact: \(result.verified) records")
                print("anchor: \(result.headSequence):\(result.headHash)")
            }
            if !result.intact { throw ExitCode(1) }
        }
    }
}
