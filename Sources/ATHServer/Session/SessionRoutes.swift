import ATHCore
import Foundation
import Hummingbird
import NIOCore

/// The HTTP side of the session layer (docs/PROTOCOL.md §11, "Channels"):
///
/// POST /ath/session/channels   attach a channel (access token and proof, like any API request)
/// POST /ath/session/frames     the HTTP transport: length-prefixed frames in, the channel's
///                              answers out (application/vnd.ath.frames)
/// GET  /ath/session/ws         the WebSocket transport (`SessionChannels.webSocketUpgrade`)
public struct SessionRoutes<Context: ATHRequestContextProtocol>: Sendable {
    public static var framesContentType: String { "application/vnd.ath.frames" }
    /// Where the first frame's channel id ends in a request body: its 4-byte length, then the
    /// frame header's version, kind, direction and epoch, then the 16-byte id.
    static var channelIDEnd: Int { 4 + 4 + SessionChannel.idSize }
    let channels: SessionChannels

    public init(channels: SessionChannels) {
        self.channels = channels
    }

    public func register(on router: Router<Context>) {
        let channels = self.channels
        let service = channels.service
        let configuration = channels.configuration
        let group = router.group("ath/session").add(middleware: ErrorShapeMiddleware<Context>())
        group.post("channels") { request, context -> Response in
            var (access, request) = try await service.admit(
                request, remoteAddress: context.remoteAddress, scope: nil, bodyLimit: 4096)
            try request.requireContentType("application/json")
            let body = try await request.collectBody(upTo: 4096)  // already read by the access check
            let attach: SessionChannel.AttachRequest
            do {
                attach = try JSONDecoder().decode(SessionChannel.AttachRequest.self, from: Data(buffer: body))
            } catch {
                throw ATHError(.malformedMessage, "a channel request is {transport: websocket|tcp|udp|http, client_nonce}")
            }
            let attached = try await channels.attach(attach, access: access, remoteAddress: context.remoteAddress?.ipAddress)
            return try JSONResponse.make(attached, status: .created)
        }
        group.post("frames") { request, context -> Response in
            let limit = configuration.maxFramesPerRequest * 64 * 1024 + SessionFrameStream.maxFrameSize
            try request.requireContentType(Self.framesContentType)
            // Frames carry their own authentication (the AEAD tag), checked once a frame is
            // whole. Before buffering more than the first read, the first frame must name an open
            // HTTP channel: a client with none gets its refusal after 24 bytes, not 5 MB.
            var body = ByteBuffer()
            var named = false
            for try await chunk in request.body {
                guard body.readableBytes + chunk.readableBytes <= limit else {
                    throw ATHError(.payloadTooLarge, "at most \(limit) bytes of frames per request")
                }
                body.writeImmutableBuffer(chunk)
                if !named, body.readableBytes >= Self.channelIDEnd {
                    let id = Array(body.readableBytesView.dropFirst(Self.channelIDEnd - SessionChannel.idSize).prefix(SessionChannel.idSize))
                    guard await channels.isOpen(id, via: .http) else {
                        throw ATHError(
                            .channelNotFound,
                            "the first frame names no open HTTP session channel of this instance (ended, or attached on another: route by \(SessionChannel.routeHeader))"
                        )
                    }
                    named = true
                }
            }
            let frames = try SessionFrameStream.decode(Array(body.readableBytesView), maxFrames: configuration.maxFramesPerRequest)
            let address = context.remoteAddress?.ipAddress
            var calls: [Task<Void, Never>] = []
            var answered: [[UInt8]] = []
            for frame in frames {
                guard let started = await channels.receive(frame, via: .http, outlet: nil, remoteAddress: address) else { continue }
                calls += started
                let id = Array(frame[4..<20])
                if !answered.contains(id) { answered.append(id) }
            }
            guard !answered.isEmpty else {
                throw ATHError(.channelNotFound, "no frame of this request opened on an open channel")
            }
            await Self.wait(for: calls, atMost: configuration.httpWait)
            var out: [UInt8] = []
            for id in answered {
                for frame in await channels.drainOutbox(id) { out += SessionFrameStream.encode(frame) }
            }
            return Response(
                status: .ok, headers: [.contentType: Self.framesContentType, .cacheControl: "no-store"],
                body: .init(byteBuffer: ByteBuffer(bytes: out)))
        }
    }

    /// Waits until the calls finished or the time is up, whichever comes first; calls still
    /// running go on, and their answers wait for the channel's next request.
    static func wait(for calls: [Task<Void, Never>], atMost limit: Duration) async {
        guard !calls.isEmpty else { return }
        let (done, finished) = AsyncStream.makeStream(of: Void.self)
        let waiter = Task {
            for call in calls { await call.value }
            finished.finish()
        }
        let timer = Task {
            try? await Task.sleep(for: limit)
            finished.finish()
        }
        for await _ in done {}
        timer.cancel()
        waiter.cancel()
    }
}
