import ATHCore
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOHTTP1

/// What one connection may hold of the server before it has proved anything.
///
/// Without these, a client that connects and sends nothing, sends its request head a byte at a
/// time, stops half-way through a body or a TLS handshake, keeps a file descriptor and its buffers
/// for as long as it likes, and a few hundred such clients lock everyone else out. Each phase of
/// a request has its own deadline, counted from its start (not from the last byte, which a
/// slow client would keep fresh):
///
/// - `idleTimeout`: a connection with no request under way and no byte of the next one;
/// - `headerTimeout`: from the first byte (a TLS handshake included) to the end of the request head;
/// - `bodyTimeout`: from the end of the head to the end of the body.
///
/// The server's own time answering is not limited here. Heads over the size limits are answered
/// `431` and malformed ones `400`, each with `Connection: close`; `maxConnections` bounds the
/// connections held at once (more wait in the kernel's accept queue).
public struct ConnectionLimits: Sendable, Equatable {
    public var idleTimeout: Duration = .seconds(60)
    public var headerTimeout: Duration = .seconds(10)
    public var bodyTimeout: Duration = .seconds(30)
    public var maxConnections: Int = 8_192
    /// One header field, name and value (the access token is about 700 bytes).
    public var maxHeaderFieldSize: Int = 8 * 1024
    /// All header fields of a request together.
    public var maxHeaderListSize: Int = 16 * 1024
    public var maxHeaderFieldCount: Int = 100
    /// The connections the kernel queues while `maxConnections` are open.
    public var backlog: Int = 1024

    public init() {}

    var decoder: HTTP1Channel.Configuration.DecoderConfiguration {
        .init(maxHeaderFieldSize: maxHeaderFieldSize, maxHeaderListSize: maxHeaderListSize, maxHeaderFieldCount: maxHeaderFieldCount)
    }

    /// The HTTP/1.1 channel configuration with these header limits.
    public var http1: HTTP1Channel.Configuration { .init(httpDecoderConfiguration: decoder) }

    /// A connection becoming a WebSocket leaves HTTP: its request deadlines end (the WebSocket
    /// pings instead) and the HTTP-level handler goes, before the first frame can reach it.
    static func upgrading(_ channel: any Channel) {
        let work: @Sendable () -> Void = {
            let pipeline = channel.pipeline.syncOperations
            if let progress = try? pipeline.handler(type: RequestProgress.self) { pipeline.removeHandler(progress, promise: nil) }
            (try? pipeline.handler(type: ConnectionDeadlines.self))?.enter(.disarmed)
        }
        if channel.eventLoop.inEventLoop { work() } else { channel.eventLoop.execute(work) }
    }

}

extension HTTPServerBuilder {
    /// HTTP/1.1 (with the session layer's WebSocket upgrade when `sessions` is given), in TLS
    /// when `tls` is, with `limits` applied to every connection outside TLS, so that the TLS
    /// handshake is timed too.
    static func limited(_ limits: ConnectionLimits, tls: TLSChannelConfiguration?, sessions: SessionChannels?) -> HTTPServerBuilder {
        .init { responder in
            if let sessions {
                try limitedChannel(sessions.webSocketChannel(responder: responder, limits: limits), limits, tls)
            } else {
                try limitedChannel(HTTP1Channel(responder: responder, configuration: limits.http1), limits, tls)
            }
        }
    }

    private static func limitedChannel<Base: ServerChildChannel>(_ base: Base, _ limits: ConnectionLimits, _ tls: TLSChannelConfiguration?)
        throws -> any ServerChildChannel
    {
        if let tls { return LimitedChannel(base: try TLSChannel(base, configuration: tls), limits: limits) }
        return LimitedChannel(base: base, limits: limits)
    }
}

/// Adds the connection's deadlines first in its pipeline (raw bytes, before TLS), and after the
/// base channel's HTTP decoder the handler that tells them where each request stands.
struct LimitedChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value
    let base: Base
    let limits: ConnectionLimits

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(ConnectionDeadlines(limits: limits, logger: logger), position: .first)
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }.flatMapThrowing { value in
            let decoder = try channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try channel.pipeline.syncOperations.addHandler(RequestProgress(logger: logger), position: .after(decoder))
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

extension LimitedChannel: HTTPChannelHandler where Base: HTTPChannelHandler {
    var responder: HTTPChannelHandler.Responder { base.responder }
}

/// The connection's deadline for the phase it is in; closes it when one passes.
final class ConnectionDeadlines: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    enum Phase: Equatable {
        /// No request under way and no byte of the next one.
        case idle
        /// Bytes arrived (a TLS handshake, a request head) but no whole head yet.
        case head
        /// A head arrived; its body has not ended.
        case body
        /// Every request received; the server is answering.
        case serving
        /// A refusal was sent; the peer has a moment to read it before the connection closes.
        case closing
        /// Upgraded to another protocol, which keeps its own time (WebSocket pings).
        case disarmed
    }

    let limits: ConnectionLimits
    let logger: Logger
    private(set) var phase = Phase.idle
    private var timer: Scheduled<Void>?
    private var context: ChannelHandlerContext?

    init(limits: ConnectionLimits, logger: Logger) {
        self.limits = limits
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { enter(.idle) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        enter(.idle)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if phase == .idle { enter(.head) }
        context.fireChannelRead(data)
    }

    /// `RequestProgress` reports each step of the requests on the connection.
    func enter(_ next: Phase) {
        guard phase != .disarmed, !(phase == .closing && next != .disarmed) else { return }
        phase = next
        let limit: Duration? =
            switch next {
            case .idle: limits.idleTimeout
            case .head: limits.headerTimeout
            case .body: limits.bodyTimeout
            case .closing: .seconds(2)
            case .serving, .disarmed: nil
            }
        deadline = limit.map { .now() + TimeAmount($0) }
        // One timer serves every phase: a request's phases each start later than the last, so
        // usually only `deadline` moves and the timer, when it fires, sets itself again for it.
        if let deadline, timer == nil || deadline < scheduledFor { schedule(at: deadline) }
    }

    /// When the phase in force must end (nil: the server is answering, or the connection upgraded).
    private var deadline: NIODeadline?
    private var scheduledFor = NIODeadline.distantFuture

    private func schedule(at when: NIODeadline) {
        guard let context else { return }
        timer?.cancel()
        scheduledFor = when
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: when) { [weak self] in self?.expired() }
    }

    private func expired() {
        timer = nil
        scheduledFor = .distantFuture
        guard let deadline, let context else { return }
        if deadline > .now() { return schedule(at: deadline) }
        logger.debug("closing a connection whose \(phase) deadline passed", metadata: ["peer": "\(context.channel.remoteAddress?.description ?? "-")"])
        context.close(promise: nil)
    }
}

/// Sits after the HTTP decoder: tells the deadlines where the connection's requests stand, and
/// answers a head the decoder refused (431 over the size limits, 400 otherwise) before the
/// connection closes. Removed when the connection upgrades to a WebSocket.
final class RequestProgress: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    let logger: Logger
    private var deadlines: ConnectionDeadlines?
    /// Heads received minus responses finished: pipelined requests are counted.
    private var open = 0
    private var readingBody = false

    init(logger: Logger) { self.logger = logger }

    func handlerAdded(context: ChannelHandlerContext) {
        deadlines = try? context.pipeline.syncOperations.handler(type: ConnectionDeadlines.self)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            open += 1
            readingBody = true
            deadlines?.enter(.body)
        case .body: break
        case .end:
            readingBody = false
            deadlines?.enter(.serving)
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let ended = if case .end = unwrapOutboundIn(data) { true } else { false }
        context.write(data, promise: promise)
        if ended {
            open = max(open - 1, 0)
            if open == 0 && !readingBody { deadlines?.enter(.idle) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parse = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        // A response under way would be cut in two by ours: close without one.
        guard open == 0 || (open == 1 && readingBody) else {
            context.close(promise: nil)
            return
        }
        let (status, text): (HTTPResponseStatus, String) =
            parse == .headerOverflow
            ? (.requestHeaderFieldsTooLarge, "request header fields are too large")
            : (.badRequest, "the request is not valid HTTP/1.1")
        let code = (parse == .headerOverflow ? ATHError.Code.headersTooLarge : .malformedMessage).rawValue
        let body = #"{"code":"\#(code)","message":"\#(text)","retryable":false}"#
        let head = HTTPResponseHead(
            version: .http1_1, status: status,
            headers: ["connection": "close", "content-type": "application/json", "content-length": "\(body.utf8.count)"])
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: written)
        // Close our side once the answer is out, and give the peer a moment to read it: closing
        // at once, with its head still arriving, would reset the connection under the answer.
        let channel = context.channel
        written.futureResult.whenComplete { _ in
            channel.close(mode: .output).whenFailure { _ in channel.close(promise: nil) }
        }
        deadlines?.enter(.closing)
        logger.debug("refused a request head: \(parse)")
    }
}
