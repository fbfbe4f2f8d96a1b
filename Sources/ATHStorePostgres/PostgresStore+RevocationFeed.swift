import ATHCore
import ATHStore
import Foundation
import Logging
import PostgresNIO

/// Revocations go out with `pg_notify` inside the transaction that makes them, so PostgreSQL
/// delivers them at its commit, and never for a transaction that rolled back. Each listener
/// holds a connection of its own (outside the pool: LISTEN is per connection) and reconnects
/// after a second when it drops. A revocation committed while a listener is disconnected is not
/// replayed; the caches' expiry (2 s at most) still bounds how long it goes unseen.
extension PostgresStore: RevocationFeed {
    static let revocationChannel = "ath_revocation"

    /// Inside the caller's transaction. Long grant lists go in several notifications (a
    /// payload holds at most 8,000 bytes).
    static func notify(_ revocation: Revocation, on c: PostgresConnection, _ logger: Logger) async throws {
        var parts = [revocation]
        if case .grants(let ids) = revocation {
            guard !ids.isEmpty else { return }
            parts = stride(from: 0, to: ids.count, by: 50).map { .grants(Array(ids[$0..<min($0 + 50, ids.count)])) }
        }
        for part in parts {
            let payload = String(decoding: try CanonicalJSON.bytes(of: part), as: UTF8.self)
            try await c.query("SELECT pg_notify(\(revocationChannel), \(payload))", logger: logger)
        }
    }

    public func revocations() -> AsyncStream<Revocation> {
        notifications(on: Self.revocationChannel) { try? JSONValue.parse(Array($0.utf8)).decode(Revocation.self) }
    }

    /// The payloads `pg_notify` sends on `channel`, decoded (nil: dropped), for as long as the
    /// stream is consumed.
    func notifications<Event: Sendable>(on channel: String, _ decode: @escaping @Sendable (String) -> Event?) -> AsyncStream<Event> {
        let (stream, continuation) = AsyncStream<Event>.makeStream(bufferingPolicy: .bufferingNewest(10_000))
        let configuration = self.configuration
        let logger = self.logger
        let task = Task {
            while !Task.isCancelled {
                do {
                    let connection = try await PostgresConnection.connect(configuration: try configuration.connection(), id: 0, logger: logger)
                    // Closed on every path: a connection dropped without closing traps.
                    do {
                        try await connection.listen(on: channel) { notifications in
                            for try await notification in notifications {
                                if let event = decode(notification.payload) { continuation.yield(event) }
                            }
                        }
                    } catch {
                        if !Task.isCancelled { logger.warning("\(channel) feed disconnected; listening again in a second") }
                    }
                    try? await connection.close()
                } catch {
                    if !Task.isCancelled { logger.warning("\(channel) feed cannot connect; trying again in a second") }
                }
                try? await Task.sleep(for: .seconds(1))
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }
}
