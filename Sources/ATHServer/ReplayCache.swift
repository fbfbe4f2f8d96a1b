import Synchronization

/// Proof nonces already seen, until they can no longer pass the timestamp check.
///
/// A proof is accepted while its timestamp is within ±300 s, so its nonce must be remembered
/// until then. Keys are filed by the second they expire in, and each second's keys are dropped
/// once when it passes: memory follows the request rate of the last ten minutes at most, and no
/// request waits behind a sweep of the whole cache.
public final class ReplayCache: Sendable {
    private struct State {
        var expiry: [String: Int64] = [:]
        var bySecond: [Int64: [String]] = [:]
        var swept: Int64?
    }

    private let state = Mutex(State())

    public init() {}

    /// Inserts `key`, remembered through `expiresAt`; false when it is already there.
    public func insert(_ key: String, expiresAt: Int64, now: Int64) -> Bool {
        state.withLock { s in
            Self.drop(before: now, &s)
            if let until = s.expiry[key], until >= now { return false }
            s.expiry[key] = expiresAt
            s.bySecond[expiresAt, default: []].append(key)
            return true
        }
    }

    /// How many keys are remembered (for tests and metrics).
    public var count: Int { state.withLock { $0.expiry.count } }

    private static func drop(before now: Int64, _ s: inout State) {
        guard let swept = s.swept else {
            s.swept = now
            return
        }
        guard swept < now else { return }
        // After a quiet spell, visit the seconds that hold keys rather than every second since.
        let seconds = now - swept > 64 ? s.bySecond.keys.filter { $0 < now } : Array(swept..<now)
        for second in seconds {
            for key in s.bySecond.removeValue(forKey: second) ?? [] where s.expiry[key] == second {
                s.expiry.removeValue(forKey: key)
            }
        }
        s.swept = now
    }
}
