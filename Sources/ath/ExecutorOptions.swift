import ArgumentParser
import NIOCore
import NIOPosix

/// Where a server command's Swift tasks run. By default on SwiftNIO's event loops
/// (`NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor`): a
/// request's handler then runs on the thread that reads and writes its connection, instead of
/// being handed to Swift's own thread pool and its answer handed back. On this 2-core machine a
/// request then makes 0.15 voluntary thread switches instead of 1.2, the API serves 10-25 %
/// more requests a second, and extra work in a handler (the access check) costs little more
/// than itself; HTTP handshakes, whose public-key work then runs on the I/O threads, run about
/// 12 % slower (docs/PERFORMANCE.md). Process-wide, so chosen once, before a server starts. With it, code that
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
