import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import ServiceLifecycle

/// Runs a router on a local address in the background and reports the port it got: the demo,
/// `ath serve` and the tests all start servers this way (port 0 picks a free one).
public final class RunningServer: Sendable {
    public let port: Int
    public let host: String
    let task: Task<Void, any Error>
    let group: ServiceGroup

    init(host: String, port: Int, scheme: String, task: Task<Void, any Error>, group: ServiceGroup) {
        self.host = host
        self.scheme = scheme
        self.port = port
        self.task = task
        self.group = group
    }

    let scheme: String
    public var baseURL: String { "\(scheme)://\(host):\(port)" }

    /// Stops accepting connections and waits for the server to end.
    public func stop() async {
        await group.triggerGracefulShutdown()
        _ = await task.result
    }

    public static func start<Context: RequestContext>(
        _ router: Router<Context>, host: String = "127.0.0.1", port: Int = 0, tls: ServerTLS? = nil,
        sessionChannels: SessionChannels? = nil, limits: ConnectionLimits = .init(), logger: Logger = Logger(label: "ath.http")
    ) async throws -> RunningServer where Context.Source == ApplicationRequestContextSource {
        let (stream, continuation) = AsyncStream.makeStream(of: Int.self)
        var quiet = logger
        quiet.logLevel = .warning
        // With session channels, GET /ath/session/ws upgrades to their WebSocket transport.
        let app = Application(
            router: router, server: .limited(limits, tls: try tls?.channelConfiguration(logger: quiet), sessions: sessionChannels),
            configuration: .init(
                address: .hostname(host, port: port), serverName: "swift-ath", backlog: limits.backlog,
                availableConnectionsDelegate: MaximumAvailableConnections(limits.maxConnections)),
            onServerRunning: { channel in
                continuation.yield(channel.localAddress?.port ?? 0)
                continuation.finish()
            }, logger: quiet)
        let group = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: quiet))
        // The stream ends when the server does: a server that never ran (its port in use) ends it
        // without a port, which is the error below, instead of a wait for a port forever.
        let task = Task {
            defer { continuation.finish() }
            try await group.run()
        }
        var bound = 0
        for await p in stream { bound = p }
        guard bound > 0 else {
            task.cancel()
            _ = await task.result
            throw ServerStartError.couldNotBind(host: host, port: port)
        }
        return RunningServer(host: host, port: bound, scheme: tls == nil ? "http" : "https", task: task, group: group)
    }
}

public enum ServerStartError: Error, CustomStringConvertible {
    case couldNotBind(host: String, port: Int)

    public var description: String {
        switch self {
        case .couldNotBind(let host, let port): "could not listen on \(host):\(port)"
        }
    }
}
