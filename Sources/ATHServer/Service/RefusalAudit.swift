import ATHStore
import Logging
import Synchronization

/// Audit records of refused requests, written in batches off the request path.
///
/// Anyone can send a request that is refused: one database write per refusal would let a flood of
/// garbage turn into a flood of SQLite transactions on the audit table. Refusals are queued in
/// memory instead and written by one drain at a time, a batch per transaction, so the write rate is
/// bounded by the store however fast they arrive. Past `capacity` waiting records, further ones are
/// counted and written as one `audit.dropped` record rather than kept. What is still queued when
/// the process dies is lost; `flush()` writes it on an orderly stop.
public final class RefusalAudit: Sendable {
    private struct State {
        var pending: [AuditEvent] = []
        var dropped = 0
        var lastDroppedAt: Int64 = 0
        var draining = false
    }

    let store: any ATHStore
    let capacity: Int
    let batchSize: Int
    let logger: Logger
    private let state = Mutex(State())

    public init(store: any ATHStore, capacity: Int = 10_000, batchSize: Int = 500, logger: Logger = Logger(label: "ath.audit")) {
        self.store = store
        self.capacity = capacity
        self.batchSize = batchSize
        self.logger = logger
    }

    /// Queues a record and starts a drain if none is running; never waits for the store.
    public func record(_ event: AuditEvent) {
        let start = state.withLock { s -> Bool in
            if s.pending.count >= capacity {
                s.dropped += 1
                s.lastDroppedAt = event.at
            } else {
                s.pending.append(event)
            }
            guard !s.draining else { return false }
            s.draining = true
            return true
        }
        if start { Task { await self.drain() } }
    }

    /// Returns once everything recorded before the call is written (or failed to be).
    public func flush() async {
        while true {
            let action = state.withLock { s -> Int in
                if s.draining { return 0 }
                if s.pending.isEmpty && s.dropped == 0 { return 1 }
                s.draining = true
                return 2
            }
            switch action {
            case 1: return
            case 2: await drain()
            default: try? await Task.sleep(for: .milliseconds(5))
            }
        }
    }

    /// Writes batches until the queue is empty; the caller holds the `draining` flag.
    private func drain() async {
        while true {
            let (batch, dropped, droppedAt) = state.withLock { s -> ([AuditEvent], Int, Int64) in
                let batch = Array(s.pending.prefix(batchSize))
                s.pending.removeFirst(batch.count)
                let dropped = s.dropped
                s.dropped = 0
                if batch.isEmpty && dropped == 0 { s.draining = false }
                return (batch, dropped, s.lastDroppedAt)
            }
            if batch.isEmpty && dropped == 0 { return }
            var events = batch
            if dropped > 0 {
                events.append(
                    AuditEvent(
                        at: droppedAt, event: "audit.dropped", actor: "server", subject: "refused requests", outcome: String(dropped),
                        detail: "over the audit queue's capacity of \(capacity)"))
            }
            do {
                try await store.appendAudit(events)
            } catch {
                // Not retried: a store that refuses writes would otherwise grow the queue forever.
                logger.error("audit batch lost", metadata: ["records": "\(events.count)", "error": "\(error)"])
            }
        }
    }
}
