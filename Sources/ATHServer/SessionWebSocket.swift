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
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await frame in frames { try await outbound.write(.binary(ByteBuffer(bytes: frame))) }
            }
            defer { queue.finish() }
            for try await message in inbound.messages(maxSize: SessionFrameStream.maxFrameSize) {
                guard case .binary(let buffer) = message else {
                    try await outbound.close(.unacceptableData, reason: "session frames are binary messages")
                    break
                }
                await self.receive(Array(buffer.readableBytesView), via: .webSocket, outlet: outlet, remoteAddress: remoteAddress)
            }
            await self.disconnected(outletID)
        }
    }
}
