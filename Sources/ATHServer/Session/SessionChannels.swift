import ATHCore
import Foundation
import Logging

/// Where a channel's outgoing frames go: a connection's ordered queue (WebSocket, TCP) or the
/// UDP socket towards the address of the last authentic datagram. `deliver` is synchronous so
/// that frames leave in the order they were sealed (a stream receiver takes only the next
/// sequence number).
public struct SessionOutlet: Sendable {
    /// Which connection or peer address; a closed connection ends the channels bound to it.
    public let id: String
    public let deliver: @Sendable ([UInt8]) -> Void

    public init(id: String, deliver: @escaping @Sendable ([UInt8]) -> Void) {
        self.id = id
        self.deliver = deliver
    }
}

/// The server's channels of the encrypted session layer, one registry for all four transports:
/// a transport hands in frames and an outlet, the registry finds the channel by the frame's id,
/// runs it through the channel's `ServerSessionEndpoint`, runs calls through `SessionRPCRoutes`
/// (so every call passes the grant's checks) and sends what comes out. Channels end with their
/// grant (checked between calls by a sweep), a revocation, a close frame, idleness, or — for
/// WebSocket and TCP — their connection.
public actor SessionChannels {
    public struct Configuration: Sendable {
        /// Seconds without an authentic frame after which a channel is forgotten.
        public var idleTimeout: Int = 900
        public var maxChannels: Int = 10_000
        public var maxChannelsPerSession: Int = 16
        /// How often the grant's end and revocations are checked between calls.
        public var sweepInterval: Duration = .seconds(1)
        /// HTTP: how long a request waits for the answers of the calls it carried.
        public var httpWait: Duration = .seconds(10)
        public var maxFramesPerRequest: Int = 64
        /// Frames kept for an HTTP channel until its next request; beyond, the channel ends.
        public var maxOutbox: Int = 1024
        /// WebSocket and TCP: a connection that brings no authentic frame within this time, or
        /// brings `maxRefusedPerConnection` frames that are refused, is closed.
        public var connectionGrace: Duration = .seconds(10)
        public var maxRefusedPerConnection: Int = 64
        /// Calls of one channel running at once; more are answered RATE_LIMITED at once (a
        /// grant without a rate limit must still not start unbounded work).
        public var maxCallsInFlight: Int = 64

        public init() {}
    }

    struct Channel {
        var endpoint: ServerSessionEndpoint
        var access: VerifiedAccess
        var transport: SessionChannel.Transport
        var outlet: SessionOutlet?
        var outbox: [[UInt8]] = []
        var lastActive: Date
        var remoteAddress: String?
        var running = 0
    }

    public let service: ATHService
    public let methods: SessionRPCRoutes
    public let configuration: Configuration
    let logger: Logger
    var channels: [[UInt8]: Channel] = [:]
    /// Frames dropped before any channel's endpoint saw them, and those its endpoint refused.
    public private(set) var refusals: [String: Int] = [:]
    var sweeper: Task<Void, Never>?

    public init(
        service: ATHService, methods: SessionRPCRoutes, configuration: Configuration = .init(), logger: Logger = Logger(label: "ath.session")
    ) {
        self.service = service
        self.methods = methods
        self.configuration = configuration
        self.logger = logger
    }

    deinit { sweeper?.cancel() }

    public var count: Int { channels.count }

    /// Opens a channel for an admitted request (`POST /ath/session/channels`).
    public func attach(_ request: SessionChannel.AttachRequest, access: VerifiedAccess, remoteAddress: String?) async throws
        -> SessionChannel.Attached
    {
        let clientNonce = try SessionChannel.bytes(request.client_nonce, count: SessionChannel.nonceSize, field: "client_nonce")
        let secrets = try await service.sessionSecrets(for: access)
        guard channels.count < configuration.maxChannels else {
            throw ATHError(.rateLimited, "the server holds its maximum of session channels; try again later")
        }
        guard channels.values.filter({ $0.access.claims.sid == access.claims.sid }).count < configuration.maxChannelsPerSession else {
            throw ATHError(.rateLimited, "this session has its maximum of \(configuration.maxChannelsPerSession) channels open")
        }
        let channelID = Self.randomBytes(SessionChannel.idSize)
        let serverNonce = Self.randomBytes(SessionChannel.nonceSize)
        let channelSecrets = try SessionChannel.secrets(of: secrets, channelID: channelID, clientNonce: clientNonce, serverNonce: serverNonce)
        let now = Date()
        let endpoint = try ServerSessionEndpoint(secrets: channelSecrets, suite: .aes256gcm, ordering: request.transport.ordering, now: now)
        channels[channelID] = Channel(
            endpoint: endpoint, access: access, transport: request.transport, lastActive: now, remoteAddress: remoteAddress)
        startSweeping()
        return SessionChannel.Attached(
            channel_id: Base64URL.encode(Data(channelID)), server_nonce: Base64URL.encode(Data(serverNonce)), transport: request.transport,
            expires_at: access.grant.expiresAt, idle_timeout: configuration.idleTimeout)
    }

    /// Whether `channelID` names an open channel attached for `transport` (counted among the
    /// refusals when it does not, like a frame dropped for it).
    public func isOpen(_ channelID: [UInt8], via transport: SessionChannel.Transport) -> Bool {
        guard let attached = channels[channelID]?.transport else {
            tally("unknown_channel")
            return false
        }
        guard attached == transport else {
            tally("wrong_transport")
            return false
        }
        return true
    }

    /// One frame from a transport. Returns the calls it started (HTTP waits for them), or nil
    /// when the frame was dropped. `outlet` nil: answers wait in the channel's outbox.
    @discardableResult
    public func receive(_ frame: [UInt8], via transport: SessionChannel.Transport, outlet: SessionOutlet?, remoteAddress: String?)
        -> [Task<Void, Never>]?
    {
        guard case .success(let header) = SessionFrame.Header.parse(frame[...]) else {
            tally("unreadable")
            return nil
        }
        let id = header.sessionID
        guard isOpen(id, via: transport) else { return nil }
        let now = Date()
        // Mutated where it lies: a copy of the channel would copy its call ledger on every frame.
        let effects = channels[id]!.endpoint.receive(frame, now: now)
        if effects.count == 1, case .dropped(let reason) = effects[0] {
            tally(reason.rawValue)
            return nil
        }
        // Authentic: this connection or address now carries the channel's answers.
        channels[id]!.lastActive = now
        if let outlet { channels[id]!.outlet = outlet }
        if let remoteAddress { channels[id]!.remoteAddress = remoteAddress }
        // Only what the calls need: holding the whole channel would make the ledger's next change a copy.
        let (access, address) = (channels[id]!.access, channels[id]!.remoteAddress)
        var started: [Task<Void, Never>] = []
        for effect in effects {
            switch effect {
            case .send(let bytes): emit(bytes, on: header.sessionID)
            case .dropped(let reason): tally(reason.rawValue)
            case .closed: channels[header.sessionID] = nil
            case .invoke(let id, let method, let params):
                guard let running = channels[header.sessionID]?.running,
                    running < configuration.maxCallsInFlight
                else {
                    let busy = ATHError(.rateLimited, "this channel has \(configuration.maxCallsInFlight) calls running; wait for an answer")
                    if let frame = try? channels[header.sessionID]?.endpoint.answer(id, .failure(busy), now: now) {
                        emit(frame, on: header.sessionID)
                    }
                    continue
                }
                channels[header.sessionID]?.running += 1
                channels[header.sessionID]?.endpoint.started(id)
                let (methods, service) = (methods, service)
                let channelID = header.sessionID
                started.append(
                    Task {
                        let result = await methods.run(method: method, params: params, access: access, service: service, remoteAddress: address)
                        self.finish(channelID, call: id, result)
                    })
            }
        }
        return started
    }

    func finish(_ channelID: [UInt8], call id: UInt64, _ result: Result<JSONValue, ATHError>) {
        guard channels[channelID] != nil else { return }  // ended while the call ran
        channels[channelID]!.running -= 1
        let now = Date()
        do {
            var frame = try channels[channelID]!.endpoint.answer(id, result, now: now)
            if let transport = channels[channelID]?.transport, frame.count > transport.maxFrameSize {
                // Too large for a datagram: the call gets an error instead (the ledger keeps that).
                let refusal = ATHError(.payloadTooLarge, "the answer is \(frame.count) bytes; \(transport.rawValue) carries at most \(transport.maxFrameSize)")
                frame = try channels[channelID]!.endpoint.answer(id, .failure(refusal), now: now)
            }
            emit(frame, on: channelID)
        } catch {
            logger.warning("session answer could not be sealed", metadata: ["error": "\(error)"])
        }
        if case .failure(let error) = result, SessionRPCRoutes.endsSession(error) {
            end(channelID, reason: error.code.rawValue)
        }
    }

    /// Frames waiting for an HTTP channel, taken by a request that carried an authentic frame of it.
    public func drainOutbox(_ channelID: [UInt8]) -> [[UInt8]] {
        guard let frames = channels[channelID]?.outbox else { return endedOutboxes.removeValue(forKey: channelID) ?? [] }
        channels[channelID]?.outbox = []
        return frames
    }

    /// The close frame of an HTTP channel that ended, kept for its last request to carry.
    var endedOutboxes: [[UInt8]: [[UInt8]]] = [:]

    func emit(_ frame: [UInt8], on channelID: [UInt8]) {
        // Field by field: a copy of the channel held here would make the append copy the outbox.
        guard let outlet = channels[channelID]?.outlet else {
            guard let queued = channels[channelID]?.outbox.count else { return }
            if queued < configuration.maxOutbox {
                channels[channelID]?.outbox.append(frame)
            } else {
                end(channelID, reason: "outbox_full")
            }
            return
        }
        outlet.deliver(frame)
    }

    /// Ends a channel from the server: a close frame to the client, then nothing accepted.
    func end(_ channelID: [UInt8], reason: String) {
        guard var channel = channels.removeValue(forKey: channelID) else { return }
        logger.debug("session channel ended", metadata: ["reason": "\(reason)"])
        if let bye = channel.endpoint.close(now: Date()) {
            if let outlet = channel.outlet {
                outlet.deliver(bye)
            } else {
                endedOutboxes[channelID] = channel.outbox + [bye]
                if endedOutboxes.count > configuration.maxChannels { endedOutboxes.removeAll() }
            }
        }
    }

    /// A WebSocket or TCP connection closed: its channels end with it.
    public func disconnected(_ outletID: String) {
        let bound = channels.compactMap { $0.value.outlet?.id == outletID ? $0.key : nil }
        for id in bound { channels[id] = nil }
    }

    func carries(_ outletID: String) -> Bool {
        channels.values.contains { $0.outlet?.id == outletID }
    }

    /// Closes channels whose grant ended or was revoked, and forgets idle ones.
    public func sweep() async {
        let now = Date()
        // A snapshot of what the sweep needs: iterating the dictionary itself across the awaits
        // below would make every frame received meanwhile copy it.
        let snapshot = channels.map { (id: $0.key, access: $0.value.access, lastActive: $0.value.lastActive) }
        // Channels attached with the same token stand or fall together: one check each sweep.
        var standing: Set<String> = []
        var fallen: [String: ATHError] = [:]
        for (id, access, lastActive) in snapshot {
            if now.timeIntervalSince(lastActive) > Double(configuration.idleTimeout) {
                end(id, reason: "idle")
                continue
            }
            let token = access.claims.jti
            if !standing.contains(token), fallen[token] == nil {
                do {
                    try await service.checkStanding(access)
                    standing.insert(token)
                } catch let error as ATHError where SessionRPCRoutes.endsSession(error) {
                    fallen[token] = error
                } catch {
                    standing.insert(token)  // the store did not answer: the next sweep or call decides
                }
            }
            if let error = fallen[token] { end(id, reason: error.code.rawValue) }
        }
    }

    func startSweeping() {
        guard sweeper == nil else { return }
        let interval = configuration.sweepInterval
        sweeper = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard let self else { return }
                await self.sweep()
            }
        }
    }

    /// Stops the sweep (the server is stopping); channels are dropped.
    public func shutdown() {
        sweeper?.cancel()
        sweeper = nil
        channels.removeAll()
    }

    func tally(_ reason: String) {
        refusals[reason, default: 0] += 1
    }

    static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }
}

/// One WebSocket or TCP connection's share of the work: hands its frames to the channels and
/// says when to hang up on a peer that is not one (too many refused frames, or no authentic
/// frame at all within the grace time).
struct SessionConnection: Sendable {
    struct Silent: Error {}

    let channels: SessionChannels
    let transport: SessionChannel.Transport
    let outlet: SessionOutlet
    let remoteAddress: String?
    var refused = 0

    /// False when the connection should be closed.
    mutating func receive(_ frame: [UInt8]) async -> Bool {
        if await channels.receive(frame, via: transport, outlet: outlet, remoteAddress: remoteAddress) == nil {
            refused += 1
            return refused < channels.configuration.maxRefusedPerConnection
        }
        return true
    }

    /// Throws `Silent` when the grace time passed and the connection carries no channel.
    func watch() async throws {
        try await Task.sleep(for: channels.configuration.connectionGrace)
        if await !channels.carries(outlet.id) { throw Silent() }
    }

    /// Serves one WebSocket or TCP connection: `write` puts a frame on it, `read` hands the
    /// peer's frames to `receive` until the peer closes or turns out not to be a session peer.
    /// Whichever ends first — the writer, the watch or the reader — ends the connection; the
    /// channels it carried end with it.
    static func serve(
        _ channels: SessionChannels, transport: SessionChannel.Transport, remoteAddress: String?,
        write: @escaping @Sendable ([UInt8]) async throws -> Void, read: @escaping @Sendable (SessionConnection) async throws -> Void
    ) async {
        let (frames, queue) = AsyncStream.makeStream(of: [UInt8].self)
        let outlet = SessionOutlet(id: "\(transport.rawValue):" + UUID().uuidString) { queue.yield($0) }
        let connection = SessionConnection(channels: channels, transport: transport, outlet: outlet, remoteAddress: remoteAddress)
        try? await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await frame in frames { try await write(frame) }
            }
            group.addTask { try await connection.watch() }
            group.addTask { try await read(connection) }
            defer {
                queue.finish()
                group.cancelAll()
            }
            try await group.next()
        }
        await channels.disconnected(outlet.id)
    }
}
