import Synchronization

/// A map that never holds more than twice its capacity, with every operation O(1).
///
/// Entries live in two generations. When the newer one fills up, or has been open for `maxAge`,
/// it becomes the older one, and the generation it replaces is dropped whole. A hit in the older
/// generation moves the entry to the newer one, so an entry in use survives every turn, and one
/// left unused goes within two. The caches this replaces either grew forever (sessions) or
/// filtered themselves whole on every insertion once full (verified tokens, admitted v0.1
/// tokens). That is O(n) per new entry, exactly when a server holds the most.
final class BoundedCache<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private struct Generations: Sendable {
        var newer: [Key: Value] = [:]
        var older: [Key: Value] = [:]
        var openedAt: ContinuousClock.Instant
    }

    /// Entries per generation.
    let capacity: Int
    /// How long a generation stays the newer one at most (nil: until full).
    let maxAge: Duration?
    private let generations: Mutex<Generations>

    init(capacity: Int, maxAge: Duration? = nil) {
        precondition(capacity > 0, "a cache holds at least one entry")
        self.capacity = capacity
        self.maxAge = maxAge
        generations = Mutex(Generations(openedAt: .now))
    }

    /// The entry for `key`, if held.
    func value(forKey key: Key) -> Value? {
        var dropped: [Key: Value]?
        let value = generations.withLock { g -> Value? in
            if let value = g.newer[key] { return value }
            guard let value = g.older.removeValue(forKey: key) else { return nil }
            dropped = Self.insert(value, for: key, into: &g, capacity: capacity, maxAge: maxAge)
            return value
        }
        _ = dropped  // released here, outside the lock
        return value
    }

    func set(_ value: Value, forKey key: Key) {
        var dropped: [Key: Value]?
        generations.withLock { g in dropped = Self.insert(value, for: key, into: &g, capacity: capacity, maxAge: maxAge) }
        _ = dropped
    }

    func removeValue(forKey key: Key) {
        generations.withLock { g in
            g.newer[key] = nil
            g.older[key] = nil
        }
    }

    /// Drops every entry `shouldRemove` picks (O(n): for revocations, which are rare).
    func removeAll(where shouldRemove: (Value) -> Bool) {
        generations.withLock { g in
            g.newer = g.newer.filter { !shouldRemove($0.value) }
            g.older = g.older.filter { !shouldRemove($0.value) }
        }
    }

    /// Entries held, both generations.
    var count: Int { generations.withLock { $0.newer.count + $0.older.count } }

    /// Inserts into the newer generation, turning the generations first when it is full or old;
    /// returns the generation dropped, for the caller to release outside the lock.
    private static func insert(
        _ value: Value, for key: Key, into g: inout Generations, capacity: Int, maxAge: Duration?
    ) -> [Key: Value]? {
        var dropped: [Key: Value]?
        let now = ContinuousClock.now
        let full = g.newer[key] == nil && g.newer.count >= capacity
        if full || maxAge.map({ now - g.openedAt >= $0 }) == true {
            dropped = g.older
            g.older = g.newer
            g.newer = [:]
            g.openedAt = now
            g.older[key] = nil  // replaced below: one copy per key
        }
        g.newer[key] = value
        return dropped
    }
}
