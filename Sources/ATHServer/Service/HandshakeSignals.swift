import Foundation
import Synchronization

/// Wakes the agents waiting on a handshake (`GET /ath/handshake/{id}/result?wait=`) when this
/// instance changes it, instead of each waiter reading the store every 200 ms: 500 waiters did
/// that 2,500 times a second, nearly two cores of work for nothing. A change made by another
/// instance is signalled when the store pushes it (`HandshakeChangeFeed`), or seen at the
/// waiter's next look, `ATHService.Retention.pollInterval` at the latest.
final class HandshakeSignals: Sendable {
    private struct Waiter {
        let id: UInt64
        let continuation: AsyncStream<Void>.Continuation
    }

    private let waiters = Mutex<(next: UInt64, byHandshake: [String: [Waiter]])>((0, [:]))

    /// Returns when `handshake` is signalled, after `timeout`, or when the task is cancelled.
    func wait(for handshake: String, timeout: Duration) async {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let id = waiters.withLock { state in
            state.next += 1
            state.byHandshake[handshake, default: []].append(Waiter(id: state.next, continuation: continuation))
            return state.next
        }
        defer {
            waiters.withLock { state in
                state.byHandshake[handshake]?.removeAll { $0.id == id }
                if state.byHandshake[handshake]?.isEmpty == true { state.byHandshake[handshake] = nil }
            }
            continuation.finish()
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await _ in stream { return }
            }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
    }

    /// Wakes every waiter of `handshake`.
    func signal(_ handshake: String) {
        let woken = waiters.withLock { $0.byHandshake[handshake] ?? [] }
        for waiter in woken { waiter.continuation.yield() }
    }
}
