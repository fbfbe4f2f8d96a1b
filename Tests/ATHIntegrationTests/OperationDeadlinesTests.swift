import Testing

@testable import ATHStorePostgres

/// The PostgreSQL store's operation timeouts run on one clock: a wait expires at its deadline
/// (within the clock's resolution), ends at once when its call finishes first, and leaves
/// nothing behind either way.
@Suite(.timeLimit(.minutes(1))) struct OperationDeadlinesTests {
    @Test func aWaitExpiresAtItsDeadline() async {
        let deadlines = OperationDeadlines(resolution: .milliseconds(10))
        let start = ContinuousClock.now
        #expect(await deadlines.expired(at: start + .milliseconds(100)))
        let waited = ContinuousClock.now - start
        // Not before the deadline; after it, as soon as the clock's task runs (seconds late
        // when the whole suite loads both cores, hence no upper bound here but the time limit).
        #expect(waited >= .milliseconds(100), "\(waited)")
        #expect(deadlines.waiting == 0)
    }

    @Test func aCancelledWaitEndsAtOnce() async {
        let deadlines = OperationDeadlines(resolution: .milliseconds(10))
        let start = ContinuousClock.now
        let wait = Task { await deadlines.expired(at: start + .seconds(60)) }
        try? await Task.sleep(for: .milliseconds(50))
        wait.cancel()
        #expect(await wait.value == false)
        #expect(ContinuousClock.now - start < .seconds(5))
        #expect(deadlines.waiting == 0)
        // Cancelled before it even began: it does not wait either.
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return await deadlines.expired(at: .now + .seconds(60))
        }
        #expect(await early.value == false)
    }

    @Test func manyWaitsShareTheClock() async {
        let deadlines = OperationDeadlines(resolution: .milliseconds(10))
        let now = ContinuousClock.now
        let expired = await withTaskGroup(of: Bool.self) { group in
            for i in 0..<200 {
                group.addTask {
                    if i.isMultiple(of: 2) { return await deadlines.expired(at: now + .milliseconds(20)) }
                    return await withTaskGroup(of: Bool.self) { inner in
                        inner.addTask { await deadlines.expired(at: now + .seconds(60)) }
                        inner.cancelAll()
                        return await inner.next() ?? true
                    }
                }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(expired == 100)
        #expect(deadlines.waiting == 0)
    }
}
