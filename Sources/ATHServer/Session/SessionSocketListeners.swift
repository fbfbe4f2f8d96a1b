import ATHCore
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL

/// The raw TCP transport: each frame preceded by its length (4 bytes, big-endian). A
/// connection carries the channels whose authentic frames it brought; they end with it. A
/// connection that sends an impossible length is closed.
///
/// Frames are sealed and authenticated by the session layer itself (the keys were agreed over
/// the HTTPS of the attach); with `tls` the listener also speaks TLS 1.3 with the HTTP
/// server's certificate and client-certificate rules, which hides the frame headers (channel
/// id, sequence numbers, kinds, length classes) from the wire.
public final class SessionTCPListener: Sendable {
    let socket: ListeningSocket
    public var port: Int { socket.port }

    init(_ socket: ListeningSocket) {
        self.socket = socket
    }

    public static func start(
        channels: SessionChannels, host: String = "127.0.0.1", port: Int = 0, tls: ServerTLS? = nil,
        logger: Logger = Logger(label: "ath.session.tcp")
    ) async throws -> SessionTCPListener {
        let secured = try tls.map { tls in
            let configuration = try tls.channelConfiguration(logger: logger)
            return (context: try NIOSSLContext(configuration: configuration.tlsConfiguration), verify: configuration.customVerificationCallback)
        }
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let secured {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLServerHandler(context: secured.context, customVerificationCallback: secured.verify, configuration: .init()))
                    }
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        let server = listener.channel
        let task = Task {
            await withDiscardingTaskGroup { group in
                do {
                    try await listener.executeThenClose { inbound in
                        for try await connection in inbound {
                            group.addTask { await serve(connection, channels: channels) }
                        }
                    }
                } catch {
                    // The listener was closed.
                }
                group.cancelAll()
            }
        }
        return SessionTCPListener(ListeningSocket(server, task))
    }

    static func serve(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>, channels: SessionChannels) async {
        let remoteAddress = connection.channel.remoteAddress?.ipAddress
        try? await connection.executeThenClose { inbound, outbound in
            await SessionConnection.serve(
                channels, transport: .tcp, remoteAddress: remoteAddress,
                write: { try await outbound.write(ByteBuffer(bytes: SessionFrameStream.encode($0))) }
            ) { connection in
                var connection = connection
                var stream = SessionFrameStream()
                for try await chunk in inbound {
                    // An impossible length: this is not a session peer.
                    guard let complete = try? stream.append(chunk.readableBytesView) else { return }
                    for frame in complete where await !connection.receive(frame) { return }
                }
            }
        }
    }

    /// Stops accepting and closes every connection.
    public func stop() async { await socket.stop() }
}

/// The UDP transport: one frame per datagram, from any address that holds the channel's keys;
/// answers go to the address of the channel's last authentic datagram. Loss and reordering are
/// the receive window's and the client's retransmissions' business (docs/PROTOCOL.md §11).
public final class SessionUDPListener: Sendable {
    let socket: ListeningSocket
    public var port: Int { socket.port }

    init(_ socket: ListeningSocket) {
        self.socket = socket
    }

    public static func start(channels: SessionChannels, host: String = "127.0.0.1", port: Int = 0) async throws -> SessionUDPListener {
        let socket = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            // NIO reads 2,048 bytes per datagram by default: a larger frame would arrive cut.
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 65_536))
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: channel)
                }
            }
        let channel = socket.channel
        let task = Task {
            _ = try? await socket.executeThenClose { inbound, outbound in
                let (datagrams, queue) = AsyncStream.makeStream(of: AddressedEnvelope<ByteBuffer>.self)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for await datagram in datagrams { try? await outbound.write(datagram) }
                    }
                    defer {
                        queue.finish()
                        group.cancelAll()
                    }
                    for try await datagram in inbound {
                        let peer = datagram.remoteAddress
                        let outlet = SessionOutlet(id: "udp:\(peer)") { frame in
                            queue.yield(AddressedEnvelope(remoteAddress: peer, data: ByteBuffer(bytes: frame)))
                        }
                        let frame = Array(datagram.data.readableBytesView)
                        await channels.receive(frame, via: .udp, outlet: outlet, remoteAddress: peer.ipAddress)
                    }
                }
            }
        }
        return SessionUDPListener(ListeningSocket(channel, task))
    }

    public func stop() async { await socket.stop() }
}

/// What both listeners hold: the bound socket, its port, and the task serving it.
struct ListeningSocket: Sendable {
    let channel: any Channel
    let task: Task<Void, Never>
    let port: Int

    init(_ channel: any Channel, _ task: Task<Void, Never>) {
        self.channel = channel
        self.task = task
        port = channel.localAddress?.port ?? 0
    }

    /// Closes the socket (ending the serving task's loop) and waits for the task.
    func stop() async {
        try? await channel.close()
        task.cancel()
        _ = await task.value
    }
}
