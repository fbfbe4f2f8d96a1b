import ATHCore
import Foundation
import HTTPTypes
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore

extension SessionChannels {
    public static let webSocketPath = "/ath/session/ws"

    /// The HTTP server with the WebSocket transport: `GET /ath/session/ws` upgrades, every other
    /// request goes to the router. Each binary message is one frame; the connection carries the
    /// channels whose authentic frames it brought, and they end when it closes.
    public nonisolated func webSocketServer(limits: ConnectionLimits = .init()) -> HTTPServerBuilder {
        .init { responder in self.webSocketChannel(responder: responder, limits: limits) }
    }

    nonisolated func webSocketChannel(responder: @escaping HTTPChannelHandler.Responder, limits: ConnectionLimits)
        -> HTTP1WebSocketUpgradeChannel
    {
        HTTP1WebSocketUpgradeChannel(
            responder: responder,
            configuration: .init(
                http1: limits.http1, ws: .init(maxFrameSize: SessionFrameStream.maxFrameSize, autoPing: .enabled(timePeriod: .seconds(30))))
        ) { request, channel, _ in
            guard request.method == .get, request.path?.split(separator: "?").first.map(String.init) == Self.webSocketPath else {
                return .dontUpgrade
            }
            ConnectionLimits.upgrading(channel)
            let remoteAddress = channel.remoteAddress?.ipAddress
            return .upgrade([:]) { inbound, outbound, _ in
                await self.serve(inbound: inbound, outbound: outbound, remoteAddress: remoteAddress)
            }
        }
    }

    nonisolated func serve(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, remoteAddress: String?) async {
        await SessionConnection.serve(
            self, transport: .webSocket, remoteAddress: remoteAddress,
            write: { try await outbound.write(.binary(ByteBuffer(bytes: $0))) }
        ) { connection in
            var connection = connection
            for try await message in inbound.messages(maxSize: SessionFrameStream.maxFrameSize) {
                guard case .binary(let buffer) = message, await connection.receive(Array(buffer.readableBytesView)) else {
                    try await outbound.close(.policyViolation, reason: "not session frames")
                    return
                }
            }
        }
    }
}
