import ArgumentParser
import NIOCore
import NIOPosix

/// Where a server command's Swift tasks run. By default on SwiftNIO's event loops
/// (`NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor`): a
/// request's handler then runs on the thread that reads and writes its connection, instead of
/// being handed to Swift's own thread pool and its answer handed back. On this 2-core machine
/// that took about a quarter of the CPU off a request and nine in ten of its thread switches,
/// and with them most of what any extra work in a handler (the access check) cost besides itself
/// (docs/PERFORMANCE.md). Process-wide, so chosen once, before a server starts. With it, code that
/// blocks a thread blocks an event loop: the server's own code does not (the store waits through
/// GRDB's async calls, which run on GRDB's queues).
struct ExecutorOptions: ParsableArguments {
    @Flag(
        inversion: .prefixedNo,
        help: "Run Swift tasks on SwiftNIO's event loops; --no-event-loop-executor keeps Swift's own thread pool.")
    var eventLoopExecutor = true

    /// Where the tasks run, for a benchmark's report.
    var summary: String { eventLoopExecutor ? "SwiftNIO's event loops" : "Swift's own thread pool" }

    func apply() {
        guard eventLoopExecutor else { return }
        _ = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    }
}
