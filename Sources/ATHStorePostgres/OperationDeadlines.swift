import ATHStore
import Synchronization

/// The operation timeout of every store call: the caller has its answer by the deadline, whatever
/// the call is doing.
///
/// A structured race (a task group with the call and a timer) is not bounded: the group returns
/// only once every child has, and a postgres-nio query in flight does not end when cancelled,
/// only when the server answers or the connection closes. With the database stopping under load,
/// calls timed out at 2 s and their callers had the answer up to 7 s later
/// (`PostgresFaultTests`). Here the call runs in a task of its own and the caller waits on a
/// continuation that the first of three resumes: the call's end, the deadline, or the caller's
/// cancellation. A call that loses is cancelled and left to finish by itself (a transaction
/// checks for cancellation before its COMMIT, so it rolls back). So a call may outlive its caller:
/// it must capture nothing the caller lends it only for the call's duration. The store's
/// protocols take their callbacks `@escaping` for this reason; a `withoutActuallyEscaping`
/// closure captured by a call trapped the process when the call's task released it late.
///
/// The deadlines are kept by one clock for the whole store, rather than a `Task.sleep` timer per
/// call (armed and cancelled thousands of times a second, about a tenth of the server's CPU per
/// handshake on PostgreSQL): a call that ends in time costs a dictionary insertion and removal.
/// A deadline fires up to one `resolution` late, which nothing needs to be exact about (it only
/// turns a database that does not answer into STORE_UNAVAILABLE).
final class OperationDeadlines: Sendable {
    private struct Waiter {
        let deadline: ContinuousClock.Instant
        let expire: @Sendable () -> Void
    }

    private struct State {
        var next = 0
        var waiters: [Int: Waiter] = [:]
        var ticking = false
    }

    let resolution: Duration
    private let state = Mutex(State())

    init(resolution: Duration = .milliseconds(50)) {
        self.resolution = resolution
    }

    /// `body`'s result, or `StoreError.unavailable` once `timeout` has passed, or
    /// `CancellationError` once the calling task is cancelled, whichever comes first.
    func run<T: Sendable>(within timeout: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let race = Race<T>()
        let id = register(deadline: .now + timeout) {
            race.finish(.failure(StoreError.unavailable("no answer within \(timeout)")), cancelling: true)
        }
        race.attach(
            Task {
                let outcome: Result<T, any Error>
                do { outcome = .success(try await body()) } catch { outcome = .failure(error) }
                self.unregister(id)
                race.finish(outcome, cancelling: false)
            })
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { race.attach($0) }
        } onCancel: {
            self.unregister(id)
            race.finish(.failure(CancellationError()), cancelling: true)
        }
    }

    /// Number of calls in progress (for tests).
    var waiting: Int { state.withLock { $0.waiters.count } }

    private func register(deadline: ContinuousClock.Instant, expire: @escaping @Sendable () -> Void) -> Int {
        let (id, tick) = state.withLock { s -> (Int, Bool) in
            s.next &+= 1
            s.waiters[s.next] = Waiter(deadline: deadline, expire: expire)
            defer { s.ticking = true }
            return (s.next, !s.ticking)
        }
        if tick { startTicking() }
        return id
    }

    private func unregister(_ id: Int) {
        state.withLock { _ = $0.waiters.removeValue(forKey: id) }
    }

    /// One task while any call is in progress; it stops when none is left.
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
                for waiter in expired { waiter.expire() }
                if !more { return }
            }
        }
    }
}

/// One call's outcome, delivered once to its caller: whichever of the call, the deadline and the
/// caller's cancellation finishes first wins, in whatever order the caller's continuation and
/// the call's task arrive.
private final class Race<T: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<T, any Error>?
        var outcome: Result<T, any Error>?
        var work: Task<Void, Never>?
        var finished = false
    }

    private let state = Mutex(State())

    func attach(_ continuation: CheckedContinuation<T, any Error>) {
        let early = state.withLock { s -> Result<T, any Error>? in
            guard let outcome = s.outcome else {
                s.continuation = continuation
                return nil
            }
            s.outcome = nil
            return outcome
        }
        if let early { continuation.resume(with: early) }
    }

    func attach(_ work: Task<Void, Never>) {
        let cancel = state.withLock { s -> Bool in
            s.work = work
            return s.finished
        }
        if cancel { work.cancel() }
    }

    /// Delivers `outcome` unless another one was; a deadline or a cancellation also cancels the call.
    func finish(_ outcome: Result<T, any Error>, cancelling: Bool) {
        let (continuation, work) = state.withLock { s -> (CheckedContinuation<T, any Error>?, Task<Void, Never>?) in
            guard !s.finished else { return (nil, nil) }
            s.finished = true
            guard let continuation = s.continuation else {
                s.outcome = outcome
                return (nil, cancelling ? s.work : nil)
            }
            s.continuation = nil
            return (continuation, cancelling ? s.work : nil)
        }
        continuation?.resume(with: outcome)
        work?.cancel()
    }
}
