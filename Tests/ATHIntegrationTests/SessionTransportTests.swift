import ATHAgent
import ATHCore
import ATHServer
import AsyncHTTPClient
import Foundation
import HummingbirdWSClient
import Logging
import NIOCore
import NIOPosix
import ShoppingExample
import Testing

/// The session layer end to end: a real handshake, a channel attached over each of the four
/// transports, and RPC calls that pass the grant's checks exactly as HTTP requests do.
@Suite struct SessionTransportTests {
    enum Kind: String, CaseIterable, CustomStringConvertible {
        case http, webSocket, tcp, udp
        var description: String { rawValue }
    }

    /// A harness with the TCP and UDP listeners beside its HTTP server.
    struct Platform {
        var h: Harness
        var tcp: SessionTCPListener
        var udp: SessionUDPListener

        static func start(sessions: SessionChannels.Configuration = .init()) async throws -> Platform {
            var methods = ShoppingPlatform.sessionMethods
            // Answers as large as asked, to see what each transport carries.
            methods.register("test.blob", scope: "goods:read") { params, _ in
                guard case .integer(let size)? = params["size"], (0...100_000).contains(size) else { return .null }
                return .string(String(repeating: "x", count: Int(size)))
            }
            methods.register("test.slow", scope: "goods:read") { _, _ in
                try await Task.sleep(for: .milliseconds(500))
                return "done"
            }
            let h = try await Harness.start(sessions: sessions, methods: methods)
            try await h.registerParties()
            return Platform(
                h: h, tcp: try await SessionTCPListener.start(channels: h.channels), udp: try await SessionUDPListener.start(channels: h.channels))
        }

        func route(_ kind: Kind) -> ATHSessionChannel.Route {
            switch kind {
            case .http: .http
            case .webSocket: .webSocket()
            case .tcp: .tcp(host: "127.0.0.1", port: tcp.port)
            case .udp: .udp(host: "127.0.0.1", port: udp.port)
            }
        }

        func stop() async {
            await tcp.stop()
            await udp.stop()
            await h.stop()
        }
    }

    @Test(arguments: Kind.allCases)
    func callsRunUnderTheGrantOverEveryTransport(_ kind: Kind) async throws {
        let p = try await Platform.start()
        defer { Task { await p.stop() } }
        let session = try await p.h.handshake(scopes: ["goods:read", "order:create"])
        let channel = try await session.openChannel(p.route(kind))
        #expect(channel.transport.rawValue == (kind == .webSocket ? "websocket" : kind.rawValue))

        let found = try await channel.call("goods.search", ["keyword": "phone"])
        guard case .array(let goods)? = found["goods"] else {
            Issue.record("goods.search answered \(found)")
            return
        }
        #expect(goods.count == 3)
        let order = try await channel.call("order.create", ["goods_id": "123", "quantity": 1])
        #expect(order["amount"] == .integer(3999) || order["amount"] == .number(3999))
        // The grant's restrictions and scopes hold for calls as for requests.
        #expect(await refusal { _ = try await channel.call("order.create", ["goods_id": "300", "quantity": 1]) } == .amountLimitExceeded)
        #expect(await refusal { _ = try await channel.call("user.profile") } == .scopeInsufficient)
        #expect(await refusal { _ = try await channel.call("no.such.method") } == .malformedMessage)
        // Calls run concurrently on one channel; each answer finds its call.
        let keywords = ["phone", "case", "laptop", "pro", "x"]
        let counts = try await withThrowingTaskGroup(of: (String, Int).self) { group in
            for keyword in keywords {
                group.addTask {
                    guard case .array(let list)? = try await channel.call("goods.search", ["keyword": .string(keyword)])["goods"] else { return (keyword, -1) }
                    return (keyword, list.count)
                }
            }
            return try await group.reduce(into: [String: Int]()) { $0[$1.0] = $1.1 }
        }
        #expect(counts == ["phone": 3, "case": 1, "laptop": 1, "pro": 1, "x": 2])
        #expect(try await channel.status(of: 1) == .processed)
        #expect(try await channel.status(of: 3) == .failed)
        #expect(await channel.refusals.isEmpty)
        #expect(await p.h.channels.refusals.isEmpty)
        #expect(await p.h.channels.count == 1)

        await channel.close()
        // The close frame (or the closed connection) ends the server's channel.
        try await eventually { await p.h.channels.count == 0 }
        await #expect(throws: (any Error).self) { _ = try await channel.call("goods.search") }
    }

    /// Frames of a few KiB in both directions over every transport (a datagram holds up to
    /// 65,507 bytes; over UDP a larger call is refused before it is sent, and a larger answer
    /// becomes PAYLOAD_TOO_LARGE).
    @Test(arguments: Kind.allCases)
    func largerFramesCrossEveryTransport(_ kind: Kind) async throws {
        let p = try await Platform.start()
        defer { Task { await p.stop() } }
        let session = try await p.h.handshake(scopes: ["goods:read"])
        let channel = try await session.openChannel(p.route(kind))
        let long = String(repeating: "phone ", count: 1000)
        #expect(try await channel.call("goods.search", ["keyword": .string(long)])["goods"] == .array([]))
        #expect(try await channel.call("test.blob", ["size": 20_000]).stringValue?.count == 20_000)
        let big = String(repeating: "y", count: 70_000)
        if kind == .udp {
            #expect(await refusal { _ = try await channel.call("goods.search", ["keyword": .string(big)]) } == .payloadTooLarge)
            #expect(await refusal { _ = try await channel.call("test.blob", ["size": 70_000]) } == .payloadTooLarge)
        } else {
            #expect(try await channel.call("goods.search", ["keyword": .string(big)])["goods"] == .array([]))
            #expect(try await channel.call("test.blob", ["size": 70_000]).stringValue?.count == 70_000)
        }
        // The channel goes on.
        #expect(try await channel.call("goods.search", ["keyword": "case"])["goods"] != nil)
        #expect(await channel.refusals.isEmpty)
        #expect(await p.h.channels.refusals.isEmpty)
        await channel.close()
    }

    @Test func aRevocationBetweenCallsClosesTheChannel() async throws {
        var sessions = SessionChannels.Configuration()
        sessions.sweepInterval = .milliseconds(100)
        let p = try await Platform.start(sessions: sessions)
        defer { Task { await p.stop() } }
        let session = try await p.h.handshake(scopes: ["goods:read"])
        let channel = try await session.openChannel(.webSocket())
        _ = try await channel.call("goods.search", ["keyword": "phone"])
        let claims = try JWTCodec.unverifiedClaims(of: await session.grant.accessToken, as: AccessTokenClaims.self, error: .tokenInvalid)
        try await p.h.service.revokeGrant(claims.gid, by: "test")
        // No call needed: the server's sweep sees the revocation and sends a close frame.
        try await eventually { await channel.ended != nil }
        #expect(await channel.ended as? SessionChannelError == .closedByServer)
        #expect(await p.h.channels.count == 0)
        await #expect(throws: SessionChannelError.closedByServer) { _ = try await channel.call("goods.search") }
        // A new channel cannot be attached under the revoked grant.
        #expect(await refusal { _ = try await session.openChannel(.http) } == .tokenRevoked)
    }

    @Test func theGrantsEndClosesTheChannel() async throws {
        var sessions = SessionChannels.Configuration()
        sessions.sweepInterval = .milliseconds(100)
        let p = try await Platform.start(sessions: sessions)
        defer { Task { await p.stop() } }
        // Long enough for the handshake, the attach and one call on a loaded machine (the
        // suites run in parallel on two cores): with 3 s the grant once ended before the call.
        let session = try await p.h.handshake(scopes: ["goods:read"], ttl: 8)
        let channel = try await session.openChannel(p.route(.tcp))
        #expect(channel.expiresAt == (await session.grant.grantExpiresAt))
        _ = try await channel.call("goods.search")
        try await eventually(within: .seconds(20)) { await channel.ended != nil }
        #expect(await channel.ended as? SessionChannelError == .closedByServer)
        #expect(await p.h.channels.count == 0)
    }

    /// A channel runs a bounded number of calls at once; the rest are answered RATE_LIMITED
    /// at once instead of piling up work (a grant need not have a rate limit).
    @Test func callsInFlightPerChannelAreBounded() async throws {
        var sessions = SessionChannels.Configuration()
        sessions.maxCallsInFlight = 2
        let p = try await Platform.start(sessions: sessions)
        defer { Task { await p.stop() } }
        let session = try await p.h.handshake(scopes: ["goods:read"])
        let channel = try await session.openChannel(p.route(.tcp))
        let outcomes = await withTaskGroup(of: ATHError.Code?.self) { group in
            for _ in 0..<4 { group.addTask { await refusal { _ = try await channel.call("test.slow") } } }
            return await group.reduce(into: [ATHError.Code?]()) { $0.append($1) }
        }
        #expect(outcomes.filter { $0 == nil }.count == 2)
        #expect(outcomes.filter { $0 == .rateLimited }.count == 2)
        #expect(try await channel.call("test.slow") == "done")
    }

    /// A channel the server forgot (here: idle; also a restart) costs `session.call` nothing:
    /// the refused call never ran, so it goes again on a new channel.
    @Test func sessionCallAttachesAgainWhenTheServerForgotItsChannel() async throws {
        var sessions = SessionChannels.Configuration()
        sessions.idleTimeout = 1
        sessions.sweepInterval = .milliseconds(100)
        let p = try await Platform.start(sessions: sessions)
        defer { Task { await p.stop() } }
        let session = try await p.h.handshake(scopes: ["goods:read"])
        _ = try await session.call("goods.search", ["keyword": "case"])
        try await eventually { await p.h.channels.count == 0 }
        let answer = try await session.call("goods.search", ["keyword": "laptop"])
        #expect(answer["goods"] != nil)
        #expect(await p.h.channels.count == 1)
        #expect(await p.h.channels.refusals["unknown_channel"] == 1)
    }

    /// `session.call` opens an HTTP channel at the first call and keeps using it.
    @Test func sessionCallUsesOneDefaultChannel() async throws {
        let p = try await Platform.start()
        defer { Task { await p.stop() } }
        let session = try await p.h.handshake(scopes: ["goods:read"])
        _ = try await session.call("goods.search", ["keyword": "case"])
        let answer = try await session.call("goods.search", ["keyword": "laptop"])
        guard case .array(let goods)? = answer["goods"] else {
            Issue.record("goods.search answered \(answer)")
            return
        }
        #expect(goods.count == 1)
        #expect(await p.h.channels.count == 1)
    }

    /// Attaching needs the token and its proof, like any API request; frames of no open channel
    /// are refused with CHANNEL_NOT_FOUND and counted.
    @Test func attachingAndSendingAreChecked() async throws {
        let p = try await Platform.start()
        defer { Task { await p.stop() } }
        let session = try await p.h.handshake(scopes: ["goods:read"])
        let client = p.h.httpClient
        func post(_ path: String, _ body: [UInt8], headers: [(String, String)] = []) async throws -> (Int, JSONValue?) {
            var request = HTTPClientRequest(url: p.h.server.baseURL + path)
            request.method = .POST
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            request.headers.add(name: "content-type", value: path.hasSuffix("frames") ? SessionRoutes<ATHRequestContext>.framesContentType : "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
            let response = try await client.execute(request, timeout: .seconds(10))
            let bytes = try await response.body.collect(upTo: 1 << 20)
            return (Int(response.status.code), try? JSONValue.parse(Array(bytes.readableBytesView)))
        }
        let nonce = Base64URL.encode(Data(repeating: 1, count: 32))
        let attach = Array(#"{"transport":"http","client_nonce":"\#(nonce)"}"#.utf8)
        let (status, error) = try await post("/ath/session/channels", attach)
        #expect(status == 401 && error?["code"] == "TOKEN_MISSING")

        let short = Array(#"{"transport":"http","client_nonce":"AAAA"}"#.utf8)
        let (badStatus, badError) = try await post(
            "/ath/session/channels", short, headers: await session.authHeaders("POST", "/ath/session/channels", Data(short)))
        #expect(badStatus == 400 && badError?["code"] == "MALFORMED_MESSAGE")

        // A well-formed frame of a channel that does not exist.
        var sealer = SessionSealer(
            keys: SessionTrafficKeys(secret: .init(size: .bits256), suite: .aes256gcm), direction: .clientToServer,
            sessionID: Array(repeating: 9, count: 16), now: Date())
        let frame = try sealer.seal(.call, Array(#"{"id":1,"method":"goods.search","params":{}}"#.utf8), now: Date())
        let (lostStatus, lost) = try await post("/ath/session/frames", SessionFrameStream.encode(frame))
        #expect(lostStatus == 404 && lost?["code"] == "CHANNEL_NOT_FOUND")
        // Cut short, it is refused for the channel it names before its end is looked at: the
        // server reads no further than the first frame's channel id for a channel it lacks.
        let (cutStatus, cut) = try await post("/ath/session/frames", Array(SessionFrameStream.encode(frame).dropLast(3)))
        #expect(cutStatus == 404 && cut?["code"] == "CHANNEL_NOT_FOUND")
        let (tinyStatus, tiny) = try await post("/ath/session/frames", Array(SessionFrameStream.encode(frame).prefix(10)))
        #expect(tinyStatus == 400 && tiny?["code"] == "MALFORMED_MESSAGE")
        #expect(await p.h.channels.refusals["unknown_channel"] == 2)
    }

    /// Over UDP a lost datagram costs a retransmission, not the call: the proxy between agent
    /// and server drops the first datagram each way, and the call still runs once.
    @Test func aLostDatagramIsSentAgain() async throws {
        let p = try await Platform.start()
        defer { Task { await p.stop() } }
        let proxy = try await LossyUDPProxy.start(to: p.udp.port, dropFirst: 1)
        defer { Task { await proxy.stop() } }
        let session = try await p.h.handshake(scopes: ["goods:read", "order:create"])
        let channel = try await session.openChannel(.udp(host: "127.0.0.1", port: proxy.port))
        let order = try await channel.call("order.create", ["goods_id": "200", "quantity": 2])
        #expect(order["goods_id"] == "200")
        #expect(await proxy.dropped >= 1)
        #expect(try await channel.status(of: 1) == .processed)
    }

    /// A datagram delivered twice (or replayed by someone on the path) is dropped as `replayed`
    /// by the window; the call it carried runs once.
    @Test func aDuplicatedDatagramIsDroppedAsReplayed() async throws {
        let p = try await Platform.start()
        defer { Task { await p.stop() } }
        let proxy = try await LossyUDPProxy.start(to: p.udp.port, dropFirst: 0, duplicate: true)
        defer { Task { await proxy.stop() } }
        let session = try await p.h.handshake(scopes: ["goods:read", "order:create"])
        let channel = try await session.openChannel(.udp(host: "127.0.0.1", port: proxy.port))
        _ = try await channel.call("order.create", ["goods_id": "200", "quantity": 1])
        _ = try await channel.call("goods.search", ["keyword": "phone"])
        // Both copies were refused before the endpoint's ledger, so nothing ran twice.
        try await eventually { await p.h.channels.refusals["replayed", default: 0] >= 2 }
        #expect(await channel.refusals.isEmpty)
    }
}

/// Raw TCP peers that are not session agents are hung up on.
@Suite struct SessionConnectionLimitTests {
    /// Connects, sends `bytes`, and returns once the server closed the connection (or fails the test after 5 s).
    static func serverHangsUp(port: Int, sending bytes: [UInt8]) async throws {
        let connection = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
            }
        let closed = try await connection.executeThenClose { inbound, outbound in
            if !bytes.isEmpty { try await outbound.write(ByteBuffer(bytes: bytes)) }
            return try await finishes { for try await _ in inbound {} }
        }
        #expect(closed, "the server kept the connection open")
    }

    @Test func silentImpossibleAndForgedPeersAreDisconnected() async throws {
        var sessions = SessionChannels.Configuration()
        sessions.connectionGrace = .milliseconds(200)
        sessions.maxRefusedPerConnection = 3
        let h = try await Harness.start(sessions: sessions)
        defer { Task { await h.stop() } }
        let tcp = try await SessionTCPListener.start(channels: h.channels)
        defer { Task { await tcp.stop() } }
        // Silent: nothing within the grace time.
        try await Self.serverHangsUp(port: tcp.port, sending: [])
        // A length no frame can have.
        try await Self.serverHangsUp(port: tcp.port, sending: [0x7f, 0xff, 0xff, 0xff])
        // Well-formed frames of no channel, one after another.
        var sealer = SessionSealer(
            keys: SessionTrafficKeys(secret: .init(size: .bits256), suite: .aes256gcm), direction: .clientToServer,
            sessionID: Array(repeating: 5, count: 16), now: Date())
        var forged: [UInt8] = []
        for _ in 0..<3 { forged += SessionFrameStream.encode(try sealer.seal(.status, Array(#"{"id":1}"#.utf8), now: Date())) }
        try await Self.serverHangsUp(port: tcp.port, sending: forged)
        #expect(await h.channels.refusals["unknown_channel"] == 3)
    }

    /// The same grace time holds for a WebSocket that upgrades and then sends nothing.
    @Test func aSilentWebSocketIsDisconnected() async throws {
        var sessions = SessionChannels.Configuration()
        sessions.connectionGrace = .milliseconds(200)
        let h = try await Harness.start(sessions: sessions)
        defer { Task { await h.stop() } }
        let url = h.server.baseURL.replacingOccurrences(of: "http://", with: "ws://") + SessionChannels.webSocketPath
        let closed = try await finishes {
            try await WebSocketClient.connect(url: url, logger: Logger(label: "test")) { inbound, _, _ in
                for try await _ in inbound {}
            }
        }
        #expect(closed, "the server kept a silent WebSocket open")
    }
}

/// The code of the ATH refusal `body` throws, nil when it throws none.
func refusal(_ body: () async throws -> Void) async -> ATHError.Code? {
    do {
        try await body()
        return nil
    } catch {
        return (error as? ATHError)?.code
    }
}

/// Polls `condition` until it holds, or fails the test after `within`.
/// Whether `body` returns within `limit` (false: it was still running, and is cancelled).
func finishes(within limit: Duration = .seconds(5), _ body: @escaping @Sendable () async throws -> Void) async throws -> Bool {
    try await withThrowingTaskGroup(of: Bool.self) { group in
        group.addTask {
            try await body()
            return true
        }
        group.addTask {
            try await Task.sleep(for: limit)
            return false
        }
        let first = try await group.next() ?? false
        group.cancelAll()
        return first
    }
}

/// The default limit is generous: it costs nothing when the condition holds soon, and the
/// suites run in parallel on two cores.
func eventually(within limit: Duration = .seconds(15), _ condition: @Sendable () async -> Bool) async throws {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if await condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    Issue.record("the condition did not hold within \(limit)")
}

/// A UDP relay on loopback that drops the first `dropFirst` datagrams from the agent (and, with
/// `duplicate`, sends every other one twice).
actor LossyUDPProxy {
    let port: Int
    let socket: any Channel
    var task: Task<Void, Never>?
    private(set) var dropped = 0

    init(port: Int, socket: any Channel) {
        self.port = port
        self.socket = socket
    }

    static func start(to serverPort: Int, dropFirst: Int, duplicate: Bool = false) async throws -> LossyUDPProxy {
        let server = try SocketAddress(ipAddress: "127.0.0.1", port: serverPort)
        let bound = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: channel)
                }
            }
        let proxy = LossyUDPProxy(port: bound.channel.localAddress?.port ?? 0, socket: bound.channel)
        await proxy.run(bound, server: server, dropFirst: dropFirst, duplicate: duplicate)
        return proxy
    }

    func run(
        _ bound: NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>, server: SocketAddress, dropFirst: Int,
        duplicate: Bool
    ) {
        task = Task {
            var agent: SocketAddress?
            try? await bound.executeThenClose { inbound, outbound in
                for try await datagram in inbound {
                    if datagram.remoteAddress == server {
                        if let agent { try await outbound.write(AddressedEnvelope(remoteAddress: agent, data: datagram.data)) }
                    } else {
                        agent = datagram.remoteAddress
                        if self.drop(dropFirst) { continue }
                        try await outbound.write(AddressedEnvelope(remoteAddress: server, data: datagram.data))
                        if duplicate { try await outbound.write(AddressedEnvelope(remoteAddress: server, data: datagram.data)) }
                    }
                }
            }
        }
    }

    func drop(_ limit: Int) -> Bool {
        guard dropped < limit else { return false }
        dropped += 1
        return true
    }

    func stop() async {
        try? await socket.close()
        await task?.value
    }
}
