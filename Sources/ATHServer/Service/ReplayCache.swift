import Synchronization

/// Proof nonces already seen, until they can no longer pass the timestamp check.
///
/// A proof is accepted while its timestamp is within ±300 s, so its nonce must be remembered
/// until then: at a few thousand requests a second that is millions of entries, touched once
/// on every request. So an entry is a 64-bit digest of (session, nonce), not a string: no
/// allocation per request, 24 bytes per entry (table and expiry list), and the table stays
/// small enough not to push the rest of the server's work out of the processor's caches (with
/// string keys, the cache cost more than the rest of the access check together). The digest
/// is SipHash under this process's random seed, which no client knows: two different nonces
/// share one only by chance (with a million nonces remembered, a fresh one is refused about
/// once in 10¹³ proofs), and then the later proof is refused, never admitted — a replay
/// always finds its own entry.
///
/// Entries are spread over shards, each with its own lock and its own expiry, so that two
/// cores rarely wait for each other and growing one table never stalls every request at once.
/// Keys are filed by the second they expire in, and each second's keys are dropped once when
/// it passes: memory follows the request rate of the last ten minutes at most.
public final class ReplayCache: Sendable {
    struct Key: Hashable {
        var digest: UInt64

        /// A nonce hashes alike as a String or a slice of one.
        init(_ scope: String, _ nonce: some StringProtocol) {
            var hasher = Hasher()
            hasher.combine(scope)
            hasher.combine(nonce)
            digest = UInt64(UInt(bitPattern: hasher.finalize()))
        }
    }

    private struct State {
        var expiry: [Key: Int64] = [:]
        var bySecond: [Int64: [Key]] = [:]
        var swept: Int64?
    }

    private final class Shard: Sendable {
        let state = Mutex(State())
    }

    private static let shardCount = 32
    private let shards = (0..<ReplayCache.shardCount).map { _ in Shard() }

    public init() {}

    /// Inserts `nonce` of `scope` (a session id), remembered through `expiresAt`; false when it
    /// is already there.
    public func insert(scope: String, nonce: some StringProtocol, expiresAt: Int64, now: Int64) -> Bool {
        let key = Key(scope, nonce)
        return shards[Int(key.digest % UInt64(Self.shardCount))].state.withLock { s in
            Self.drop(before: now, &s)
            // One probe of the table: insert, and put the old entry back in the rare case of a replay.
            if let until = s.expiry.updateValue(expiresAt, forKey: key), until >= now {
                s.expiry[key] = until
                return false
            }
            s.bySecond[expiresAt, default: []].append(key)
            return true
        }
    }

    /// How many keys are remembered (for tests and metrics).
    public var count: Int { shards.reduce(0) { total, shard in total + shard.state.withLock { $0.expiry.count } } }

    /// Forgets what expired before `now` in every shard (a shard that sees no requests keeps
    /// its keys until its next insert otherwise).
    public func sweep(now: Int64) {
        for shard in shards { shard.state.withLock { Self.drop(before: now, &$0) } }
    }

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
