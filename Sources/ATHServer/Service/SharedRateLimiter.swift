import ATHCore
import ATHStore
import Foundation
import Synchronization

/// How a server counts a limit: in its own memory (`SlidingWindowLimiter`, one instance) or
/// toward totals every instance shares (`SharedRateLimiter`).
public protocol RateLimiting: Sendable {
    /// Counts one request for `key`; throws RATE_LIMITED when it would exceed `limit`.
    func admit(_ key: String, limit: RateLimit, now: Date) async throws
}

extension SlidingWindowLimiter: RateLimiting {}

/// A rate limit that holds across instances: the same sliding window as `SlidingWindowLimiter`,
/// over totals every instance adds to in the shared store.
///
/// The request path makes no round trip while the window's total is fresh: each instance
/// decides from the total it last learned plus what it counted since, and sends its counts
/// every `interval` (one statement for every counter), learning the new totals back. A counter
/// this instance has not synced within two intervals (the first request of a window, a key
/// that was idle) is read first, so a decision never rests on an old total.
///
/// Accuracy: each instance may admit what it counts within two intervals on top of what the
/// others counted in the same time and it has not learned yet; with N instances under a steady
/// load the overshoot is at most N × (one instance's admissions for that key in 2 intervals).
/// It never undercounts. When the store cannot be reached, a counter goes stale and the next
/// request fails with STORE_UNAVAILABLE (thrown here, for every caller): the limit fails closed.
final class SharedRateLimiter: RateLimiting {
    let store: any SharedRateCounters
    let interval: Duration

    private struct Counter: Hashable {
        var key: String
        var windowStart: Int64
        var window: Int64
    }

    private struct Known {
        /// Every instance's count of this window, and of the one before, as of `syncedAt`.
        var total: Int64
        var previousTotal: Int64
        var syncedAt: ContinuousClock.Instant
    }

    private struct State {
        var known: [Counter: Known] = [:]
        /// Counted here and not yet sent.
        var pending: [Counter: Int64] = [:]
        /// Counters a request waits to learn (sent with nothing added).
        var wanted: Set<Counter> = []
        var waiters: [CheckedContinuation<Void, any Error>] = []
        var flushing = false
    }

    private let state = Mutex(State())

    init(store: any SharedRateCounters, interval: Duration = .milliseconds(100)) {
        self.store = store
        self.interval = interval
    }

    private enum Decision {
        case admitted(startFlush: Bool)
        case refused
        case learnFirst
    }

    func admit(_ key: String, limit: RateLimit, now: Date) async throws {
        let window = Int64(limit.window)
        let nowMs = Int64(now.timeIntervalSince1970 * 1000)
        let windowMs = window * 1000
        let startMs = nowMs - nowMs % windowMs
        // The window's length is part of the key: a limit changed by a reload counts afresh.
        let counter = Counter(key: "\(window)s:" + key, windowStart: startMs / 1000, window: window)
        let previous = Counter(key: counter.key, windowStart: counter.windowStart - window, window: window)
        let overlap = Double(windowMs - (nowMs - startMs)) / Double(windowMs)
        for attempt in 0..<2 {
            let decision = state.withLock { s -> Decision in
                let fresh = s.known[counter].map { ContinuousClock.now - $0.syncedAt < interval * 2 } ?? false
                if !fresh && attempt == 0 {
                    s.wanted.insert(counter)
                    return .learnFirst
                }
                let known = s.known[counter]
                let current = (known?.total ?? 0) + s.pending[counter, default: 0]
                let before = (known?.previousTotal ?? 0) + s.pending[previous, default: 0]
                guard Double(before) * overlap + Double(current) + 1 <= Double(limit.count) else { return .refused }
                s.pending[counter, default: 0] += 1
                guard !s.flushing else { return .admitted(startFlush: false) }
                s.flushing = true
                return .admitted(startFlush: true)
            }
            switch decision {
            case .refused:
                throw ATHError(.rateLimited, "rate limit \(limit.count) per \(limit.window) s exceeded")
            case .admitted(let startFlush):
                if startFlush { startFlushing(after: interval) }
                return
            case .learnFirst:
                do {
                    try await learn()
                } catch StoreError.unavailable {
                    throw ATHError(.storeUnavailable, "the rate check could not reach the server's database; retry shortly")
                }
            }
        }
    }

    /// Waits for the next batch to be sent and answered (sends it now if none is on its way).
    private func learn() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let start = state.withLock { s in
                s.waiters.append(continuation)
                guard !s.flushing else { return false }
                s.flushing = true
                return true
            }
            if start { startFlushing(after: .zero) }
        }
    }

    private func startFlushing(after delay: Duration) {
        Task { [weak self] in
            if delay > .zero { try? await Task.sleep(for: delay) }
            await self?.flush()
        }
    }

    /// Sends what was counted and what is wanted, learns the totals, and goes on every
    /// `interval` while anything is counted; at once while requests wait.
    private func flush() async {
        while true {
            let (batch, waiters) = state.withLock { s -> ([RateCount], [CheckedContinuation<Void, any Error>]) in
                var counts = s.pending.map { RateCount(key: $0.key.key, windowStart: $0.key.windowStart, window: $0.key.window, add: $0.value) }
                for counter in s.wanted where s.pending[counter] == nil {
                    counts.append(RateCount(key: counter.key, windowStart: counter.windowStart, window: counter.window, add: 0))
                }
                s.wanted = []
                let waiters = s.waiters
                s.waiters = []
                if counts.isEmpty && waiters.isEmpty { s.flushing = false }
                return (counts, waiters)
            }
            if batch.isEmpty && waiters.isEmpty { return }
            do {
                let totals = try await store.addRateCounts(batch)
                let learnedAt = ContinuousClock.now
                state.withLock { s in
                    for (count, total) in zip(batch, totals) {
                        let counter = Counter(key: count.key, windowStart: count.windowStart, window: count.window)
                        s.known[counter] = Known(total: total.current, previousTotal: total.previous, syncedAt: learnedAt)
                        let left = s.pending[counter, default: 0] - count.add
                        s.pending[counter] = left > 0 ? left : nil
                    }
                    // Windows that ended over a window ago are no one's previous any more.
                    let nowSeconds = Int64(Date().timeIntervalSince1970)
                    if s.known.count > 10_000 { s.known = s.known.filter { $0.key.windowStart + 2 * $0.key.window > nowSeconds } }
                }
                for waiter in waiters { waiter.resume() }
            } catch {
                // The counts stay pending (sent again next time); the totals go stale, so the
                // next request asks the store and fails closed while it cannot be reached.
                for waiter in waiters { waiter.resume(throwing: error) }
            }
            let waiting = state.withLock { !$0.waiters.isEmpty }
            if !waiting { try? await Task.sleep(for: interval) }
        }
    }
}
