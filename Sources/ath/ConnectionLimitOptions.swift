import ATHServer
import ArgumentParser

#if canImport(Glibc)
import Glibc
#endif

/// `ConnectionLimits` for a server command: the defaults hold for a platform; the options are
/// for a deployment that knows better (a proxy in front with its own timeouts, many agents).
struct ConnectionLimitOptions: ParsableArguments {
    @Option(help: "Seconds a connection may wait with no request under way before it is closed.")
    var idleTimeout: Double = 60
    @Option(help: "Seconds from a request's first byte (the TLS handshake included) to the end of its head.")
    var headerTimeout: Double = 10
    @Option(help: "Seconds from a request's head to the end of its body.")
    var bodyTimeout: Double = 30
    @Option(help: "Connections held at once; more wait in the kernel's queue.")
    var maxConnections: Int = 8_192

    func validate() throws {
        for (name, value) in [("idle", idleTimeout), ("header", headerTimeout), ("body", bodyTimeout)] {
            guard value.isFinite, value > 0, value <= 86_400 else {
                throw ValidationError("--\(name)-timeout must be between 0 and 86400 seconds")
            }
        }
        guard (1...1_000_000).contains(maxConnections) else { throw ValidationError("--max-connections must be 1-1000000") }
    }

    var limits: ConnectionLimits {
        var limits = ConnectionLimits()
        limits.idleTimeout = .milliseconds(Int64(idleTimeout * 1000))
        limits.headerTimeout = .milliseconds(Int64(headerTimeout * 1000))
        limits.bodyTimeout = .milliseconds(Int64(bodyTimeout * 1000))
        limits.maxConnections = maxConnections
        return limits
    }

    /// Each connection is a file descriptor: the soft limit (often 1,024) is raised toward the
    /// hard one so that `maxConnections` can be reached; a server that still runs out gets
    /// accept errors, logged by SwiftNIO, and keeps serving the connections it has.
    func raiseDescriptorLimit() {
        #if canImport(Glibc)
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        let wanted = rlim_t(maxConnections + 256)
        guard limit.rlim_cur < wanted else { return }
        limit.rlim_cur = min(wanted, limit.rlim_max)
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        #endif
    }
}
