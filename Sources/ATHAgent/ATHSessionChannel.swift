import ATHCore
import Foundation
import NIOSSL

/// Failures of a session channel below ATH itself (the server's refusals are `ATHError`s).
public enum SessionChannelError: Error, Equatable, CustomStringConvertible {
    /// The call got no answer: no reply within the call's time, or (datagrams, HTTP) every
    /// retransmission went unanswered. It may or may not have run; ask `status(of:)` on the
    /// same channel while it is open.
    case noAnswer(callID: UInt64)
    /// The transport failed or closed.
    case transport(String)
    /// The server closed the channel (its grant ended or was revoked, it sat idle, or the
    /// server is stopping): calls that were running may or may not have finished.
    case closedByServer

    public var description: String {
        switch self {
        case .noAnswer(let id): "call \(id) got no answer in time"
        case .transport(let reason): "session transport: \(reason)"
        case .closedByServer: "the server closed this session channel (grant ended or revoked, idle, or stopping)"
        }
    }
}

/// A channel of the encrypted session (docs/PROTOCOL.md §11): RPC calls to the server's
/// methods over WebSocket, TCP, UDP or HTTP, sealed with keys of the channel's own. Every call
/// passes the grant's checks on the server, exactly as an HTTP request does; the server's
/// refusals arrive as `ATHError`s. Made by `ATHSession.openChannel(_:)`.
public actor ATHSessionChannel {
    /// Where the channel's frames go.
    public enum Route: Sendable {
        /// The session's own HTTP client: POST /ath/session/frames.
        case http
        /// `GET /ath/session/ws` on the session's server; `tls` for wss:// (e.g. `AgentTLS.configuration()`).
        /// `serverName`: the name the server's certificate is checked against (and sent as SNI)
        /// when the base URL's host is an IP address: the WebSocket client sends its host as SNI,
        /// which TLS does not allow for addresses.
        case webSocket(tls: TLSConfiguration? = nil, serverName: String? = nil)
        /// The server's TCP session port; `tls` when it speaks TLS (`serverName` as for WebSocket).
        case tcp(host: String, port: Int, tls: TLSConfiguration? = nil, serverName: String? = nil)
        /// The server's UDP session port.
        case udp(host: String, port: Int)

        var transport: SessionChannel.Transport {
            switch self {
            case .http: .http
            case .webSocket: .webSocket
            case .tcp: .tcp
            case .udp: .udp
            }
        }
    }

    public struct Options: Sendable {
        /// Longest wait for a call's answer.
        public var callTimeout: Duration = .seconds(60)
        /// UDP and HTTP: a call without an answer is sent again after this long…
        public var retransmitAfter: Duration
        /// …at most this many times in all since its last acknowledgement.
        public var maxAttempts: Int = 5

        public init(retransmitAfter: Duration = .milliseconds(250)) {
            self.retransmitAfter = retransmitAfter
        }
    }

    public nonisolated let id: String
    public nonisolated let transport: SessionChannel.Transport
    /// The grant's end: the server closes the channel then.
    public nonisolated let expiresAt: Int64
    let options: Options
    var endpoint: ClientSessionEndpoint
    var link: (any SessionLink)?
    var waiting: [UInt64: CheckedContinuation<JSONValue, any Error>] = [:]
    var statusWaiting: [UInt64: [CheckedContinuation<SessionRPC.Status, any Error>]] = [:]
    /// Why the channel ended, once it has.
    public private(set) var ended: (any Error)?
    var retransmitter: Task<Void, Never>?

    init(attached: SessionChannel.Attached, secrets: SessionSecrets, options: Options) throws {
        id = attached.channel_id
        transport = attached.transport
        expiresAt = attached.expires_at
        self.options = options
        endpoint = try ClientSessionEndpoint(secrets: secrets, suite: .aes256gcm, ordering: attached.transport.ordering, now: Date())
    }

    /// Frames the channel refused, by reason (replayed, tampered, …).
    public var refusals: [SessionRefusal: Int] { endpoint.refusals }

    func connect(_ makeLink: (SessionLinkInbound) async throws -> any SessionLink) async throws {
        let inbound = SessionLinkInbound(
            frame: { [weak self] frame in await self?.receive(frame) },
            ended: { [weak self] error in await self?.linkEnded(error) })
        link = try await makeLink(inbound)
        if transport.ordering != .stream { startRetransmitting() }
    }

    /// Calls `method` and waits for its result. Throws the server's refusal as `ATHError`
    /// (e.g. `SCOPE_INSUFFICIENT`, `RATE_LIMITED`, `TOKEN_REVOKED`), or `SessionChannelError`.
    public func call(_ method: String, _ params: JSONValue = [:]) async throws -> JSONValue {
        if let ended { throw ended }
        guard let link else { throw SessionChannelError.transport("not connected") }
        let (id, frame) = try endpoint.call(method, params, now: Date())
        guard frame.count <= transport.maxFrameSize else {
            endpoint.cancel(id)
            throw ATHError(.payloadTooLarge, "this call's frame is \(frame.count) bytes; \(transport.rawValue) carries at most \(transport.maxFrameSize)")
        }
        let timeout = Task { [weak self, options] in
            try? await Task.sleep(for: options.callTimeout)
            await self?.giveUp(id)
        }
        defer { timeout.cancel() }
        return try await withCheckedThrowingContinuation { continuation in
            waiting[id] = continuation
            link.send(frame)
        }
    }

    /// Asks the server what became of a call: unknown, delivered, pending, processed or failed.
    public func status(of callID: UInt64) async throws -> SessionRPC.Status {
        if let ended { throw ended }
        guard let link else { throw SessionChannelError.transport("not connected") }
        let frame = try endpoint.statusQuery(callID, now: Date())
        return try await withCheckedThrowingContinuation { continuation in
            statusWaiting[callID, default: []].append(continuation)
            link.send(frame)
        }
    }

    /// Ends the channel: a close frame to the server, then the transport.
    public func close() async {
        guard ended == nil else { return }
        if let bye = try? endpoint.close(now: Date()) { link?.send(bye) }
        finish(SessionChannelError.transport("the channel was closed"))
        await link?.close()
    }

    func receive(_ frame: [UInt8]) {
        switch endpoint.receive(frame) {
        case .replied(let id, let result): waiting.removeValue(forKey: id)?.resume(returning: result)
        case .failed(let id, let code, let message):
            let error = ATHError(ATHError.Code(rawValue: code) ?? .internalError, message)
            waiting.removeValue(forKey: id)?.resume(throwing: error)
        case .status(let id, let status):
            for waiter in statusWaiting.removeValue(forKey: id) ?? [] { waiter.resume(returning: status) }
        case .closed: finish(SessionChannelError.closedByServer)
        case .acked, .dropped: break
        }
    }

    func linkEnded(_ error: (any Error)?) {
        if let error = error as? ATHError {
            finish(error)
        } else {
            finish(SessionChannelError.transport(error.map { "\($0)" } ?? "the connection closed"))
        }
    }

    func giveUp(_ id: UInt64) {
        waiting.removeValue(forKey: id)?.resume(throwing: SessionChannelError.noAnswer(callID: id))
    }

    /// Fails everything waiting; the channel takes no more calls.
    func finish(_ error: any Error) {
        if ended == nil { ended = error }
        retransmitter?.cancel()
        retransmitter = nil
        for (_, waiter) in waiting { waiter.resume(throwing: error) }
        waiting = [:]
        for (_, waiters) in statusWaiting { for waiter in waiters { waiter.resume(throwing: error) } }
        statusWaiting = [:]
    }

    func startRetransmitting() {
        let interval = options.retransmitAfter
        retransmitter = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval / 2)
                await self?.retransmit()
            }
        }
    }

    func retransmit() {
        guard ended == nil, let link else { return }
        let seconds = Double(options.retransmitAfter.components.seconds) + Double(options.retransmitAfter.components.attoseconds) / 1e18
        guard let (frames, gaveUp) = try? endpoint.retransmissions(now: Date(), timeout: seconds, maxAttempts: options.maxAttempts) else { return }
        for frame in frames { link.send(frame) }
        for id in gaveUp { giveUp(id) }
    }
}

extension ATHSession {
    /// Opens a channel of the encrypted session over `route` (attached with this session's token
    /// and proof; keys of its own from the session's secrets and two fresh nonces).
    public func openChannel(_ route: ATHSessionChannel.Route = .http, options: ATHSessionChannel.Options? = nil) async throws
        -> ATHSessionChannel
    {
        var clientNonce = [UInt8](repeating: 0, count: SessionChannel.nonceSize)
        var generator = SystemRandomNumberGenerator()
        for i in clientNonce.indices { clientNonce[i] = UInt8.random(in: .min ... .max, using: &generator) }
        let request = SessionChannel.AttachRequest(transport: route.transport, client_nonce: Base64URL.encode(Data(clientNonce)))
        let body = try JSONEncoder().encode(request)
        try await renewIfDue()
        let routing = (SessionChannel.routeHeader, grant.secrets.sessionID)
        let reply = try await transport.send(
            .POST, "/ath/session/channels", body: body, headers: authHeaders("POST", "/ath/session/channels", body) + [routing])
        try HTTPTransport.throwIfError(reply)
        let attached = try JSONValue.parse(reply.body).decode(SessionChannel.Attached.self)
        guard attached.transport == route.transport else { throw SessionChannelError.transport("the server attached another transport") }
        let secrets = try SessionChannel.secrets(
            of: grant.secrets, channelID: try SessionChannel.bytes(attached.channel_id, count: SessionChannel.idSize, field: "channel_id"),
            clientNonce: clientNonce,
            serverNonce: try SessionChannel.bytes(attached.server_nonce, count: SessionChannel.nonceSize, field: "server_nonce"))
        var chosen = options ?? ATHSessionChannel.Options()
        if options == nil, case .http = route { chosen.retransmitAfter = .seconds(2) }
        let channel = try ATHSessionChannel(attached: attached, secrets: secrets, options: chosen)
        let transport = self.transport
        try await channel.connect { inbound in
            switch route {
            case .http: return HTTPSessionLink(transport: transport, route: routing, inbound: inbound)
            case .webSocket(let tls, let serverName):
                let base = transport.baseURL.replacingOccurrences(of: "https://", with: "wss://").replacingOccurrences(of: "http://", with: "ws://")
                return try await QueuedSessionLink.webSocket(
                    url: base + "/ath/session/ws", route: routing, tls: tls, serverName: serverName, inbound: inbound)
            case .tcp(let host, let port, let tls, let serverName):
                return try await QueuedSessionLink.tcp(host: host, port: port, tls: tls, serverName: serverName, inbound: inbound)
            case .udp(let host, let port): return try await QueuedSessionLink.udp(host: host, port: port, inbound: inbound)
            }
        }
        return channel
    }

    /// Calls an RPC method over the session's default channel (HTTP, opened at the first call and
    /// opened again when it ended). A call refused with CHANNEL_NOT_FOUND never reached a
    /// channel (the server forgot it: idle, restarted), so it is sent once more on a new one.
    public func call(_ method: String, _ params: JSONValue = [:]) async throws -> JSONValue {
        if let channel = defaultChannel, await channel.ended == nil {
            do {
                return try await channel.call(method, params)
            } catch let error as ATHError where error.code == .channelNotFound {
                // Not run: the frame reached no channel. Attach again below.
            }
        }
        let channel = try await openChannel(.http)
        defaultChannel = channel
        return try await channel.call(method, params)
    }
}
