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
    public nonisolated func webSocketServer() -> HTTPServerBuilder {
        .http1WebSocketUpgrade(
            configuration: .init(ws: .init(maxFrameSize: SessionFrameStream.maxFrameSize, autoPing: .enabled(timePeriod: .seconds(30))))
        ) { request, channel, _ in
            guard request.method == .get, request.path?.split(separator: "?").first.map(String.init) == Self.webSocketPath else {
                return .dontUpgrade
            }
            let remoteAddress = channel.remoteAddress?.ipAddress
            return .upgrade([:]) { inbound, outbound, _ in
                try await self.serve(inbound: inbound, outbound: outbound, remoteAddress: remoteAddress)
            }
        }
    }

    nonisolated func serve(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, remoteAddress: String?) async throws {
        let outletID = "ws:" + UUID().uuidString
        let (frames, queue) = AsyncStream.makeStream(of: [UInt8].self)
        let outlet = SessionOutlet(id: outletID) { queue.yield($0) }
        var connection = SessionConnection(channels: self, transport: .webSocket, outlet: outlet, remoteAddress: remoteAddress)
        try? await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await frame in frames { try await outbound.write(.binary(ByteBuffer(bytes: frame))) }
            }
            group.addTask { [connection] in try await connection.watch() }
            defer {
                queue.finish()
                group.cancelAll()
            }
            for try await message in inbound.messages(maxSize: SessionFrameStream.maxFrameSize) {
                guard case .binary(let buffer) = message, await connection.receive(Array(buffer.readableBytesView)) else {
                    try await outbound.close(.policyViolation, reason: "not session frames")
                    break
                }
            }
        }
        await self.disconnected(outletID)
    }
}
