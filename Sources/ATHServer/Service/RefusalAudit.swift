import ATHStore
import Logging
import Synchronization

/// Audit records of refused requests, counted per source and written in batches off the
/// request path.
///
/// Anyone can send a request that is refused: one record per refusal let a flood of garbage
/// grow the audit log by about 1.7 MB/s and cost the store a write per request. Refusals are
/// kept in memory instead, one entry per source, event and reason (actor, event, outcome), for
/// `window` after the first: repeats only count, so a flood from one source is one record a
/// window, saying how many there were, until when, and a few of their targets. Records are
/// written by one drain at a time, a round a window and a batch per transaction. Past
/// `capacity` entries, further sources are counted in one `audit.dropped` record rather than
/// kept, so memory is bounded however many sources there are. What is still queued when the
/// process dies is lost; `flush()` writes it on an orderly stop.
public final class RefusalAudit: Sendable {
    /// What one record counts.
    struct Key: Hashable {
        var event: String
        var actor: String
        var outcome: String
    }

    struct Entry {
        var first: AuditEvent
        var count = 1
        var lastAt: Int64
        /// The first few distinct targets (the first event's first), and whether there were more.
        var subjects: [String]
        var moreSubjects = false
    }

    private struct State {
        var pending: [Key: Entry] = [:]
        /// Keys in the order they were first seen: records are written in that order.
        var order: [Key] = []
        var dropped = 0
        var lastDroppedAt: Int64 = 0
        /// A drain task is waiting or writing.
        var draining = false
        /// Batches being written (by the drain or by `flush`).
        var writing = 0
    }

    /// Distinct targets one record names at most.
    static let sampledSubjects = 4

    let store: any ATHStore
    let capacity: Int
    let batchSize: Int
    let window: Duration
    let logger: Logger
    private let state = Mutex(State())

    public init(
        store: any ATHStore, capacity: Int = 10_000, batchSize: Int = 500, window: Duration = .seconds(1),
        logger: Logger = Logger(label: "ath.audit")
    ) {
        self.store = store
        self.capacity = capacity
        self.batchSize = batchSize
        self.window = window
        self.logger = logger
    }

    /// Counts the refusal and starts a drain if none is running; never waits for the store.
    public func record(_ event: AuditEvent) {
        let key = Key(event: event.event, actor: event.actor, outcome: event.outcome)
        let start = state.withLock { s -> Bool in
            if var entry = s.pending[key] {
                entry.count += 1
                entry.lastAt = max(entry.lastAt, event.at)
                if !entry.subjects.contains(event.subject) {
                    if entry.subjects.count < Self.sampledSubjects { entry.subjects.append(event.subject) } else { entry.moreSubjects = true }
                }
                s.pending[key] = entry
            } else if s.pending.count >= capacity {
                s.dropped += 1
                s.lastDroppedAt = event.at
            } else {
                s.pending[key] = Entry(first: event, lastAt: event.at, subjects: [event.subject])
                s.order.append(key)
            }
            guard !s.draining else { return false }
            s.draining = true
            return true
        }
        if start { Task { await self.drain() } }
    }

    /// Returns once everything recorded before the call is written (or failed to be),
    /// without waiting for the window.
    public func flush() async {
        while await writeBatch() > 0 {}
        while state.withLock({ $0.writing > 0 }) { try? await Task.sleep(for: .milliseconds(5)) }
    }

    /// The record of an entry: the first refusal as it was when it was counted once; otherwise
    /// its detail starts with the count, the last time and the sampled targets.
    static func record(of entry: Entry) -> AuditEvent {
        guard entry.count > 1 else { return entry.first }
        var event = entry.first
        let targets = (entry.subjects + (entry.moreSubjects ? ["…"] : [])).joined(separator: " | ")
        event.detail = "count=\(entry.count) last_at=\(entry.lastAt) targets=\(targets); \(event.detail)"
        return event
    }

    /// Each round waits for the window (repeats are counted meanwhile), then writes what was
    /// counted, a batch per transaction; what arrives while it writes waits for the next round.
    /// The drain ends after a round that leaves nothing. The caller holds the `draining` flag.
    private func drain() async {
        while true {
            try? await Task.sleep(for: window)
            while await writeBatch() == batchSize {}
            let over = state.withLock { s -> Bool in
                guard s.pending.isEmpty && s.dropped == 0 else { return false }
                s.draining = false
                return true
            }
            if over { return }
        }
    }

    /// Writes up to `batchSize` records (and the dropped count, if any); how many records.
    private func writeBatch() async -> Int {
        let (batch, dropped, droppedAt) = state.withLock { s -> ([AuditEvent], Int, Int64) in
            let keys = s.order.prefix(batchSize)
            s.order.removeFirst(keys.count)
            let batch = keys.compactMap { s.pending.removeValue(forKey: $0).map(Self.record(of:)) }
            let dropped = s.dropped
            s.dropped = 0
            if !batch.isEmpty || dropped > 0 { s.writing += 1 }
            return (batch, dropped, s.lastDroppedAt)
        }
        if batch.isEmpty && dropped == 0 { return 0 }
        var events = batch
        if dropped > 0 {
            events.append(
                AuditEvent(
                    at: droppedAt, event: "audit.dropped", actor: "server", subject: "refused requests", outcome: String(dropped),
                    detail: "over the audit queue's capacity of \(capacity) sources"))
        }
        do {
            try await store.appendAudit(events)
        } catch {
            // Not retried: a store that refuses writes would otherwise grow the queue forever.
            logger.error("audit batch lost", metadata: ["records": "\(events.count)", "error": "\(error)"])
        }
        state.withLock { $0.writing -= 1 }
        return max(batch.count, 1)
    }
}
