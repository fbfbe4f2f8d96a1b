import Synchronization

/// The operation timeout of every store call, kept by one clock for the whole store.
///
/// Each call used to race its body against a `Task.sleep` of the timeout: a timer per statement,
/// armed and cancelled thousands of times a second, which with the child task around it took
/// about a tenth of the server's CPU per handshake on PostgreSQL. Here a call waits on a
/// continuation instead, and one task looks every `resolution` for the waits that expired: a call
/// that ends in time costs a dictionary insertion and removal. A timeout fires up to one
/// `resolution` late, which nothing needs to be exact about (it only turns a database that does
/// not answer into STORE_UNAVAILABLE).
final class OperationDeadlines: Sendable {
    private struct Waiter {
        let deadline: ContinuousClock.Instant
        let continuation: CheckedContinuation<Bool, Never>
    }

    private struct State {
        var next = 0
        var waiters: [Int: Waiter] = [:]
        /// Waits cancelled before they were registered.
        var cancelledEarly: Set<Int> = []
        var ticking = false
    }

    let resolution: Duration
    private let state = Mutex(State())

    init(resolution: Duration = .milliseconds(50)) {
        self.resolution = resolution
    }

    /// True once `deadline` passed; false as soon as the calling task is cancelled before it.
    func expired(at deadline: ContinuousClock.Instant) async -> Bool {
        let id = state.withLock { s -> Int in
            s.next &+= 1
            return s.next
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let (resumeNow, tick) = state.withLock { s -> (Bool, Bool) in
                    if s.cancelledEarly.remove(id) != nil { return (true, false) }
                    s.waiters[id] = Waiter(deadline: deadline, continuation: continuation)
                    defer { s.ticking = true }
                    return (false, !s.ticking)
                }
                if resumeNow { continuation.resume(returning: false) }
                if tick { startTicking() }
            }
        } onCancel: {
            let waiter = state.withLock { s -> Waiter? in
                guard let waiter = s.waiters.removeValue(forKey: id) else {
                    s.cancelledEarly.insert(id)
                    return nil
                }
                return waiter
            }
            waiter?.continuation.resume(returning: false)
        }
    }

    /// Number of waits in progress (for tests).
    var waiting: Int { state.withLock { $0.waiters.count } }

    /// One task while any wait is in progress; it stops when none is left.
    private func startTicking() {
        Task { [resolution] in
            while true {
                try? await Task.sleep(for: resolution)
                let now = ContinuousClock.now
                let (expired, more) = state.withLock { s -> ([Waiter], Bool) in
                    let due = s.waiters.filter { $0.value.deadline <= now }
                    for id in due.keys { s.waiters[id] = nil }
                    if s.waiters.isEmpty { s.ticking = false }
                    return (Array(due.values), !s.waiters.isEmpty)
                }
                for waiter in expired { waiter.continuation.resume(returning: true) }
                if !more { return }
            }
        }
    }
}
