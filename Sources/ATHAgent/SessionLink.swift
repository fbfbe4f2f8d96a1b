import ATHCore
import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// Moves a channel's frames over one transport. `send` only queues (frames leave in the order
/// they were sealed: a stream receiver takes only the next sequence number); what arrives goes
/// to the `Inbound` handlers given when the link was made.
protocol SessionLink: Sendable {
    func send(_ frame: [UInt8])
    func close() async
}

/// What a link hands back to its channel.
struct SessionLinkInbound: Sendable {
    var frame: @Sendable ([UInt8]) async -> Void
    /// The link is gone (the error, if it failed rather than closed).
    var ended: @Sendable ((any Error)?) async -> Void
}

/// One POST of frames per send; the answers come back in its response. Requests may overtake
/// each other, which is why HTTP channels use the receive window like UDP.
struct HTTPSessionLink: SessionLink {
    let transport: HTTPTransport
    /// `SessionChannel.routeHeader` and the session id, for a load balancer.
    let route: (String, String)
    let inbound: SessionLinkInbound

    func send(_ frame: [UInt8]) {
        let (transport, route, inbound) = (transport, route, inbound)
        Task {
            do {
                let reply = try await transport.send(
                    .POST, "/ath/session/frames", body: Data(SessionFrameStream.encode(frame)), headers: [route],
                    contentType: "application/vnd.ath.frames")
                if let error = HTTPTransport.protocolError(in: reply) {
                    await inbound.ended(error)
                    return
                }
                guard reply.status == 200 else { throw SessionChannelError.transport("HTTP \(reply.status) from the frames endpoint") }
                for answer in try SessionFrameStream.decode(Array(reply.body), maxFrames: .max) { await inbound.frame(answer) }
            } catch {
                // A lost request is a lost datagram: the call is sent again after its timeout.
            }
        }
    }

    func close() async {}
}

/// What the WebSocket, TCP and UDP links share: outgoing frames queued in order for the one
/// writer, and the task that serves the connection and reports how it ended.
final class QueuedSessionLink: SessionLink {
    let queue: AsyncStream<[UInt8]>.Continuation
    let task: Task<Void, Never>

    init(inbound: SessionLinkInbound, serve: @escaping @Sendable (AsyncStream<[UInt8]>) async throws -> Void) {
        let (frames, queue) = AsyncStream.makeStream(of: [UInt8].self)
        self.queue = queue
        task = Task {
            do {
                try await serve(frames)
                await inbound.ended(nil)
            } catch {
                await inbound.ended(error)
            }
        }
    }

    func send(_ frame: [UInt8]) { queue.yield(frame) }

    /// Finishes the queue (its last frames, the close frame, still leave) and waits for the end.
    func close() async {
        queue.finish()
        _ = await task.value
    }

    /// Runs the writer and the reader side by side; whichever ends first ends both: the agent
    /// closing (the queue finished, its frames written) or the server closing.
    static func untilEitherEnds(
        writer: @escaping @Sendable () async throws -> Void, reader: @escaping @Sendable () async throws -> Void
    ) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask(operation: writer)
            group.addTask(operation: reader)
            try await group.next()
            group.cancelAll()
        }
    }

    /// Frames as binary WebSocket messages (`GET /ath/session/ws`).
    static func webSocket(url: String, route: (String, String), tls: TLSConfiguration?, serverName: String?, inbound: SessionLinkInbound)
        async throws -> QueuedSessionLink
    {
        let (connected, signal) = AsyncStream.makeStream(of: Result<Void, any Error>.self)
        var configuration = WebSocketClientConfiguration()
        if let name = HTTPField.Name(route.0) { configuration.additionalHeaders[name] = route.1 }
        configuration.maxFrameSize = SessionFrameStream.maxFrameSize
        configuration.sniHostname = serverName
        let link = QueuedSessionLink(inbound: inbound) { [configuration] frames in
            do {
                try await WebSocketClient.connect(
                    url: url, configuration: configuration, tlsConfiguration: tls, logger: Logger(label: "ath.session.ws")
                ) { messages, outbound, _ in
                    signal.yield(.success(()))
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            for await frame in frames { try await outbound.write(.binary(ByteBuffer(bytes: frame))) }
                            try? await outbound.close(.normalClosure, reason: nil)
                        }
                        for try await message in messages.messages(maxSize: SessionFrameStream.maxFrameSize) {
                            if case .binary(let buffer) = message { await inbound.frame(Array(buffer.readableBytesView)) }
                        }
                        group.cancelAll()
                    }
                }
                signal.finish()
            } catch {
                signal.yield(.failure(error))
                signal.finish()
                throw error
            }
        }
        var opened: Result<Void, any Error> = .failure(SessionChannelError.transport("the WebSocket to \(url) closed at once"))
        for await value in connected {
            opened = value
            break
        }
        if case .failure(let error) = opened { throw SessionChannelError.transport("the WebSocket to \(url) did not open: \(error)") }
        return link
    }

    /// Frames on a TCP connection, each preceded by its length (4 bytes, big-endian). With
    /// `tls`, TLS 1.3 to the listener; `serverName` is what its certificate is checked against
    /// (required when `host` is an IP address, which TLS cannot send as SNI).
    static func tcp(host: String, port: Int, tls: TLSConfiguration?, serverName: String?, inbound: SessionLinkInbound) async throws
        -> QueuedSessionLink
    {
        let secured = try tls.map { try NIOSSLContext(configuration: $0) }
        let name = serverName ?? host
        if secured != nil, (try? SocketAddress(ipAddress: name, port: 0)) != nil {
            throw SessionChannelError.transport("TLS to the IP address \(host) needs serverName, a name in the server's certificate")
        }
        let connection = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let secured {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: secured, serverHostname: name))
                    }
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return QueuedSessionLink(inbound: inbound) { frames in
            try await connection.executeThenClose { incoming, outbound in
                try await untilEitherEnds(
                    writer: {
                        for await frame in frames { try await outbound.write(ByteBuffer(bytes: SessionFrameStream.encode(frame))) }
                    },
                    reader: {
                        var stream = SessionFrameStream()
                        for try await chunk in incoming {
                            for frame in try stream.append(chunk.readableBytesView) { await inbound.frame(frame) }
                        }
                    })
            }
        }
    }

    /// One frame per datagram to the server's session port.
    static func udp(host: String, port: Int, inbound: SessionLinkInbound) async throws -> QueuedSessionLink {
        let server = try SocketAddress.makeAddressResolvingHost(host, port: port)
        let bound = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            // NIO reads 2,048 bytes per datagram by default: a larger frame would arrive cut.
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 65_536))
            .bind(host: server.protocol == .inet6 ? "::" : "0.0.0.0", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: channel)
                }
            }
        return QueuedSessionLink(inbound: inbound) { frames in
            try await bound.executeThenClose { incoming, outbound in
                try await untilEitherEnds(
                    writer: {
                        for await frame in frames {
                            try? await outbound.write(AddressedEnvelope(remoteAddress: server, data: ByteBuffer(bytes: frame)))
                        }
                    },
                    reader: {
                        for try await datagram in incoming where datagram.remoteAddress == server {
                            await inbound.frame(Array(datagram.data.readableBytesView))
                        }
                    })
            }
        }
    }
}
