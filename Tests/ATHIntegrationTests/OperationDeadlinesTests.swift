import ATHStore
import Synchronization
import Testing

@testable import ATHStorePostgres

/// The PostgreSQL store's operation timeout bounds what its caller waits, even for a call that
/// does not end when cancelled (as a postgres-nio query in flight does not): the caller has
/// STORE_UNAVAILABLE at the deadline, or its result if the call ends first, or a cancellation
/// at once, and nothing is left waiting either way.
@Suite(.timeLimit(.minutes(1))) struct OperationDeadlinesTests {
    /// Holds calls that ignore cancellation until the test opens it.
    final class Gate: Sendable {
        private let waiting = Mutex<(open: Bool, continuations: [CheckedContinuation<Void, Never>])>((false, []))

        func pass() async {
            await withCheckedContinuation { continuation in
                let open = waiting.withLock { state -> Bool in
                    if !state.open { state.continuations.append(continuation) }
                    return state.open
                }
                if open { continuation.resume() }
            }
        }

        func open() {
            let held = waiting.withLock { state in
                state.open = true
                defer { state.continuations = [] }
                return state.continuations
            }
            for continuation in held { continuation.resume() }
        }
    }

    final class Flag: Sendable {
        private let value = Atomic(false)
        func set() { value.store(true, ordering: .sequentiallyConsistent) }
        var isSet: Bool { value.load(ordering: .sequentiallyConsistent) }
    }

    @Test func aCallThatDoesNotAnswerIsCutAtItsDeadline() async throws {
        let deadlines = OperationDeadlines(resolution: .milliseconds(10))
        let gate = Gate()
        let ended = Flag()
        let start = ContinuousClock.now
        await #expect {
            try await deadlines.run(within: .milliseconds(100)) {
                await gate.pass()
                ended.set()
                return 1
            }
        } throws: { error in
            if case StoreError.unavailable = error { return true }
            return false
        }
        // The caller has its answer while the call still hangs (a task group around the call
        // would have waited for it, here until the time limit).
        #expect(ended.isSet == false)
        #expect(ContinuousClock.now - start >= .milliseconds(100))
        #expect(deadlines.waiting == 0)
        gate.open()
    }

    @Test func aCallThatAnswersInTimeGivesItsResultOrItsError() async throws {
        let deadlines = OperationDeadlines(resolution: .milliseconds(10))
        #expect(try await deadlines.run(within: .seconds(60)) { 42 } == 42)
        await #expect(throws: StoreError.self) {
            try await deadlines.run(within: .seconds(60)) { () -> Int in throw StoreError.duplicate("taken") }
        }
        #expect(deadlines.waiting == 0)
    }

    @Test func aCancelledCallerIsAnsweredAtOnceAndItsCallCancelled() async throws {
        let deadlines = OperationDeadlines(resolution: .milliseconds(10))
        let sawCancellation = Flag()
        let start = ContinuousClock.now
        let caller = Task {
            try await deadlines.run(within: .seconds(60)) {
                do { try await Task.sleep(for: .seconds(60)) } catch { sawCancellation.set() }
                return 1
            }
        }
        try await Task.sleep(for: .milliseconds(50))
        caller.cancel()
        await #expect(throws: CancellationError.self) { try await caller.value }
        #expect(ContinuousClock.now - start < .seconds(30))
        #expect(deadlines.waiting == 0)
        // The call itself was cancelled too (it ends by itself, shortly after).
        for _ in 0..<100 where !sawCancellation.isSet {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(sawCancellation.isSet)
        // Cancelled before it even began: it does not wait either.
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await deadlines.run(within: .seconds(60)) { () -> Int in
                try await Task.sleep(for: .seconds(60))
                return 1
            }
        }
        await #expect(throws: CancellationError.self) { try await early.value }
    }

    @Test func manyCallsShareTheClock() async {
        let deadlines = OperationDeadlines(resolution: .milliseconds(10))
        let gate = Gate()
        let (answered, timedOut) = await withTaskGroup(of: Bool?.self) { group in
            for i in 0..<200 {
                group.addTask {
                    do {
                        return try await deadlines.run(within: .milliseconds(i.isMultiple(of: 2) ? 50 : 60_000)) {
                            if i.isMultiple(of: 2) { await gate.pass() }
                            return true
                        }
                    } catch StoreError.unavailable {
                        return false
                    } catch {
                        return nil
                    }
                }
            }
            var answered = 0
            var timedOut = 0
            for await outcome in group {
                if outcome == true { answered += 1 }
                if outcome == false { timedOut += 1 }
            }
            return (answered, timedOut)
        }
        #expect(answered == 100)
        #expect(timedOut == 100)
        #expect(deadlines.waiting == 0)
        gate.open()
    }
}
