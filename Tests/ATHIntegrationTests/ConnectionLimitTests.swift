import ATHAgent
import ATHCore
import ATHServer
import Foundation
import Hummingbird
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ShoppingExample
import Testing

/// A TCP connection that writes what it is told and keeps what it reads: the hostile clients
/// of these tests (idle, slow, oversized, half a TLS handshake), which no HTTP client would be.
final class RawConnection: Sendable {
    let channel: any Channel
    let received: NIOLockedValueBox<[UInt8]>
    /// When the connection was asked for: the server's deadlines start when it accepts, which a
    /// loaded machine can report to this side later, so durations are counted from before that.
    let opened: ContinuousClock.Instant

    private init(channel: any Channel, received: NIOLockedValueBox<[UInt8]>, opened: ContinuousClock.Instant) {
        self.channel = channel
        self.received = received
        self.opened = opened
    }

    final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let received: NIOLockedValueBox<[UInt8]>
        init(_ received: NIOLockedValueBox<[UInt8]>) { self.received = received }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = unwrapInboundIn(data)
            received.withLockedValue { $0 += bytes.readableBytesView }
        }
    }

    static func open(port: Int) async throws -> RawConnection {
        let received = NIOLockedValueBox<[UInt8]>([])
        let opened = ContinuousClock.now
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Collector(received)) } }
            .connect(host: "127.0.0.1", port: port).get()
        return RawConnection(channel: channel, received: received, opened: opened)
    }

    func send(_ text: String) async throws { try await send(Array(text.utf8)) }
    func send(_ bytes: [UInt8]) async throws { try await channel.writeAndFlush(ByteBuffer(bytes: bytes)) }

    var text: String { String(decoding: received.withLockedValue { $0 }, as: UTF8.self) }

    /// How long after opening the server closed it; nil if it was still open after `limit`.
    func closed(within limit: Duration) async -> Duration? {
        let close = channel.closeFuture
        let closedAt = NIOLockedValueBox<ContinuousClock.Instant?>(nil)
        close.whenComplete { _ in closedAt.withLockedValue { $0 = .now } }
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if let at = closedAt.withLockedValue({ $0 }) { return at - opened }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return closedAt.withLockedValue { $0 }.map { $0 - opened }
    }
}

@Suite(.serialized) struct ConnectionLimitTests {
    static var tight: ConnectionLimits {
        var limits = ConnectionLimits()
        limits.idleTimeout = .milliseconds(800)
        limits.headerTimeout = .milliseconds(600)
        limits.bodyTimeout = .milliseconds(600)
        return limits
    }

    @Test func idleSlowHeadAndSlowBodyConnectionsAreClosed() async throws {
        let h = try await Harness.start(limits: Self.tight)
        let port = h.server.port
        let idle = try await RawConnection.open(port: port)
        let slowHead = try await RawConnection.open(port: port)
        let slowBody = try await RawConnection.open(port: port)
        try await slowBody.send("POST /ath/handshake HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        // Both slow clients keep sending, a byte every 100 ms: a deadline counted from the last
        // byte would never pass.
        let trickle = Task {
            try await slowHead.send("GET /health HTTP/1.1\r\n")
            for _ in 0..<40 {
                try? await slowHead.send("X")
                try? await slowBody.send(" ")
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        defer { trickle.cancel() }
        // Not before the deadline, and closed by the server (without the deadlines the trickling
        // clients would stay open past the test); how long after it depends on the machine's load.
        let idleClosed = await idle.closed(within: .seconds(15))
        let headClosed = await slowHead.closed(within: .seconds(15))
        let bodyClosed = await slowBody.closed(within: .seconds(15))
        #expect(idleClosed.map { $0 >= .milliseconds(700) } == true, "idle: \(String(describing: idleClosed))")
        #expect(headClosed.map { $0 >= .milliseconds(500) } == true, "head: \(String(describing: headClosed))")
        #expect(bodyClosed.map { $0 >= .milliseconds(500) } == true, "body: \(String(describing: bodyClosed))")
        #expect(slowHead.text.isEmpty && slowBody.text.isEmpty)
        await h.stop()
    }

    /// A connection in use is not cut by the deadlines: a request whose answer takes longer
    /// than all of them (a long poll), then another on the same connection.
    @Test func theServersOwnTimeIsNotLimited() async throws {
        let h = try await Harness.start(limits: Self.tight)
        try await h.registerParties()
        // Steps 1-5 through the service, not over HTTP: a pooled client connection left idle past
        // this server's 800 ms (a loaded machine between two steps) can be closed by the server
        // as the next request goes out on it, which is the deadline working, not what is tested.
        var client = ClientHandshake(did: h.agent, key: h.agentKey, expectedServer: ShoppingPlatform.did)
        let id = try await EndToEndTests.stepsOneToFive(&client, h)
        let connection = try await RawConnection.open(port: h.server.port)
        try await connection.send("GET /ath/handshake/\(id)/result?wait=1.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        // The answer comes after 1.5 s, past every deadline; a cut connection would get none.
        try await Self.until(10) { !connection.text.isEmpty || !connection.channel.isActive }
        #expect(connection.text.hasPrefix("HTTP/1.1 202"), "\(connection.text)")
        try await connection.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        try await Self.until(10) { connection.text.contains("HTTP/1.1 200") || !connection.channel.isActive }
        #expect(connection.text.components(separatedBy: "HTTP/1.1 200").count == 2, "\(connection.text)")
        // Then idle: closed by its own deadline.
        #expect(await connection.closed(within: .seconds(5)) != nil)
        await h.stop()
    }

    /// Waits until `done` holds, at most `seconds`.
    static func until(_ seconds: Double, _ done: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while !done(), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
    }

    @Test(arguments: [
        ("a field over 8 KiB", "X-Big: \(String(repeating: "a", count: 9000))\r\n", "431", "HEADERS_TOO_LARGE"),
        ("fields over 16 KiB", (0..<20).map { "X-F\($0): \(String(repeating: "b", count: 1000))\r\n" }.joined(), "431", "HEADERS_TOO_LARGE"),
        ("101 fields", (0..<101).map { "X-N\($0): 1\r\n" }.joined(), "431", "HEADERS_TOO_LARGE"),
        ("not HTTP", "\u{1}\u{2}garbage\r\n", "400", "MALFORMED_MESSAGE"),
    ])
    func oversizedOrMalformedHeadsAreAnsweredAndClosed(_ what: String, _ fields: String, _ status: String, _ code: String) async throws {
        let h = try await Harness.start()
        let connection = try await RawConnection.open(port: h.server.port)
        let head = code == "MALFORMED_MESSAGE" ? fields + "\r\n" : "GET /health HTTP/1.1\r\nHost: x\r\n" + fields + "\r\n"
        try await connection.send(head)
        #expect(await connection.closed(within: .seconds(5)) != nil, "\(what): still open")
        #expect(connection.text.hasPrefix("HTTP/1.1 \(status)"), "\(what): \(connection.text)")
        #expect(connection.text.contains(#""code":"\#(code)""#) && connection.text.lowercased().contains("connection: close"), "\(what)")
        // The server goes on serving.
        let next = try await RawConnection.open(port: h.server.port)
        try await next.send("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        _ = await next.closed(within: .seconds(5))
        #expect(next.text.hasPrefix("HTTP/1.1 200"))
        await h.stop()
    }

    /// The issue's scenario: 2,000 idle and 2,000 slow-head connections held open, a full
    /// handshake and an API call still go through, and the server closes every one of those
    /// connections within its deadlines. The handshake's time is printed (docs/RELIABILITY.md
    /// reports it); what is asserted is that it completes and that nothing is left open.
    @Test func thousandsOfIdleAndSlowConnections() async throws {
        var limits = ConnectionLimits()
        limits.idleTimeout = .seconds(4)
        limits.headerTimeout = .seconds(3)
        let h = try await Harness.start(limits: limits)
        try await h.registerParties()
        var held: [RawConnection] = []
        for index in 0..<4_000 {
            let connection = try await RawConnection.open(port: h.server.port)
            if index % 2 == 1 { try await connection.send("GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ") }
            held.append(connection)
        }
        let opened = ContinuousClock.now
        let started = ContinuousClock.now
        let session = try await h.handshake(scopes: ["goods:read"])
        #expect(try await session.get("/api/goods").status == 200)
        let took = ContinuousClock.now - started
        print("handshake and first call with 4,000 idle and slow connections open: \(took)")
        var open = held
        while !open.isEmpty, ContinuousClock.now - opened < .seconds(15) {
            try await Task.sleep(for: .milliseconds(200))
            open = open.filter { $0.channel.isActive }
        }
        #expect(open.isEmpty, "\(open.count) of 4,000 connections still open 15 s later")
        await h.stop()
    }

    /// Half a TLS handshake holds no connection past the header deadline.
    @Test func aStalledTLSHandshakeIsClosed() async throws {
        let fixture = try TLSFixture()
        defer { fixture.remove() }
        let h = try await Harness.start(tls: fixture.serverTLS { _ in .none }, limits: Self.tight)
        let connection = try await RawConnection.open(port: h.server.port)
        try await connection.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03])  // a ClientHello's first bytes
        let closed = await connection.closed(within: .seconds(15))
        #expect(closed.map { $0 >= .milliseconds(500) } == true, "\(String(describing: closed))")
        await h.stop()
    }

    /// A port another server holds: the start fails with couldNotBind at once. (It used to wait
    /// forever for a bound port: a test that lost its port to another test's server hung CI.)
    @Test func aPortInUseFailsTheStart() async throws {
        let first = try await RunningServer.start(Router(context: ATHRequestContext.self))
        defer { Task { await first.stop() } }
        await #expect(throws: ServerStartError.self) {
            let second = try await RunningServer.start(Router(context: ATHRequestContext.self), port: first.port)
            await second.stop()
        }
    }

    /// Past `maxConnections`, a new connection waits in the accept queue until one closes.
    @Test func theConnectionCountIsBounded() async throws {
        var limits = ConnectionLimits()
        limits.maxConnections = 2
        let h = try await Harness.start(limits: limits)
        let first = try await RawConnection.open(port: h.server.port)
        let second = try await RawConnection.open(port: h.server.port)
        try await first.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        try await second.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        try await Self.until(10) { first.text.hasPrefix("HTTP/1.1 200") && second.text.hasPrefix("HTTP/1.1 200") }
        #expect(first.text.hasPrefix("HTTP/1.1 200") && second.text.hasPrefix("HTTP/1.1 200"))
        let third = try await RawConnection.open(port: h.server.port)
        try await third.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        try await Task.sleep(for: .milliseconds(500))
        #expect(third.text.isEmpty, "answered while two connections were open: \(third.text)")
        try await first.channel.close()
        try await Self.until(10) { !third.text.isEmpty }
        #expect(third.text.hasPrefix("HTTP/1.1 200"))
        await h.stop()
    }
}
