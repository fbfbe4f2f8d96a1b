/// What a store refuses, whatever its backend: the adapters map these to the API's errors.
public enum StoreError: Error, Sendable, Equatable, CustomStringConvertible {
    case duplicate(String)
    case notFound(String)
    /// A stored row that cannot be read back.
    case corrupt(String)
    /// The database cannot be reached, or did not answer in time: nothing was written, the
    /// same call may succeed later.
    case unavailable(String)

    public var description: String {
        switch self {
        case .duplicate(let what): return "duplicate: \(what)"
        case .notFound(let what): return "not found: \(what)"
        case .corrupt(let what): return "the store is corrupt: \(what)"
        case .unavailable(let what): return "the store is unavailable: \(what)"
        }
    }
}
