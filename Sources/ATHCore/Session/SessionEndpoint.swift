import Foundation

/// The server's end of one session, as a value: it opens the client's frames, keeps the call
/// ledger and seals the answers. Transports move bytes; the adapter runs `invoke` effects
/// (after its scope check) and hands results to `answer`.
public struct ServerSessionEndpoint: Sendable {
    public enum Effect: Sendable, Equatable {
        case send([UInt8])
        /// A new call: run the method's handler, then `answer(id, ...)`.
        case invoke(id: UInt64, method: String, params: JSONValue)
        case dropped(SessionRefusal)
        /// The client closed the session.
        case closed
    }

    var opener: SessionOpener
    var sealer: SessionSealer
    var ledger = SessionRPC.CallLedger()

    public init(secrets: SessionSecrets, suite: SessionCipherSuite, ordering: SessionOpener.Ordering, now: Date) throws {
        let sid = try SessionEndpoints.sessionID(secrets)
        opener = SessionOpener(
            keys: SessionTrafficKeys(secret: secrets.clientToServer, suite: suite), direction: .clientToServer, sessionID: sid, ordering: ordering)
        sealer = SessionSealer(keys: SessionTrafficKeys(secret: secrets.serverToClient, suite: suite), direction: .serverToClient, sessionID: sid, now: now)
    }

    public var refusals: [SessionRefusal: Int] { opener.refusals }

    public mutating func receive(_ frame: [UInt8], now: Date) -> [Effect] {
        let opened: SessionOpener.Opened
        switch opener.open(frame) {
        case .failure(let reason): return [.dropped(reason)]
        case .success(let o): opened = o
        }
        switch opened.kind {
        case .keyUpdate: return []
        case .close:
            _ = try? sealer.seal(.close, [], now: now)  // nothing more goes out either
            return [.closed]
        case .call, .status:
            guard let message = try? SessionRPC.Message(kind: opened.kind, payload: opened.payload) else { return [.dropped(.malformed)] }
            do {
                if case .status(let id) = message { return [.send(try seal(.statusReply(id: id, status: ledger.status(of: id)), now: now))] }
                guard case .call(let id, let method, let params) = message else { return [.dropped(.malformed)] }
                switch ledger.receive(callID: id) {
                case .run: return [.send(try seal(.ack(id: id), now: now)), .invoke(id: id, method: method, params: params)]
                case .repeatAnswer(let answer), .refuse(let answer): return [.send(try seal(answer, now: now))]
                }
            } catch {
                return [.dropped(.closed)]
            }
        case .reply, .ack, .statusReply, .error:
            return [.dropped(.malformed)]  // answers flow from the server only
        }
    }

    /// Marks a call as running (for status queries).
    public mutating func started(_ id: UInt64) { ledger.started(id) }

    /// The frame carrying a call's answer; the ledger keeps it for retransmitted calls.
    public mutating func answer(_ id: UInt64, _ result: Result<JSONValue, ATHError>, now: Date) throws -> [UInt8] {
        let message: SessionRPC.Message =
            switch result {
            case .success(let value): .reply(id: id, result: value)
            case .failure(let error): .error(id: id, code: error.code.rawValue, message: error.message)
            }
        ledger.answered(message)
        return try seal(message, now: now)
    }

    /// Ends the session from the server (its grant ended or was revoked): a close frame for the
    /// client, and nothing accepted afterwards.
    public mutating func close(now: Date) -> [UInt8]? {
        opener.close()
        return try? sealer.seal(.close, [], now: now)
    }

    mutating func seal(_ message: SessionRPC.Message, now: Date) throws -> [UInt8] {
        try sealer.seal(message.kind, try message.payload(), now: now)
    }
}

/// The client's end: numbers calls, seals them, matches answers, and over datagrams seals
/// unanswered calls again (same call id, new sequence) for the server's ledger to de-duplicate.
public struct ClientSessionEndpoint: Sendable {
    public enum Event: Sendable, Equatable {
        case acked(UInt64)
        case replied(UInt64, JSONValue)
        case failed(UInt64, code: String, message: String)
        case status(UInt64, SessionRPC.Status)
        case closed
        case dropped(SessionRefusal)
    }

    struct Outstanding: Sendable {
        var method: String
        var params: JSONValue
        var lastSent: Date
        var attempts: Int
    }

    var opener: SessionOpener
    var sealer: SessionSealer
    var nextCallID: UInt64 = 1
    var outstanding: [UInt64: Outstanding] = [:]

    public init(secrets: SessionSecrets, suite: SessionCipherSuite, ordering: SessionOpener.Ordering, now: Date) throws {
        let sid = try SessionEndpoints.sessionID(secrets)
        opener = SessionOpener(
            keys: SessionTrafficKeys(secret: secrets.serverToClient, suite: suite), direction: .serverToClient, sessionID: sid, ordering: ordering)
        sealer = SessionSealer(keys: SessionTrafficKeys(secret: secrets.clientToServer, suite: suite), direction: .clientToServer, sessionID: sid, now: now)
    }

    public var refusals: [SessionRefusal: Int] { opener.refusals }
    public var unanswered: [UInt64] { outstanding.keys.sorted() }

    public mutating func call(_ method: String, _ params: JSONValue, now: Date) throws -> (id: UInt64, frame: [UInt8]) {
        guard SessionRPC.Message.validMethod(method) else { throw ATHError(.malformedMessage, "bad method name '\(method.prefix(64))'") }
        let id = nextCallID
        nextCallID += 1
        let frame = try sealer.seal(.call, try SessionRPC.Message.call(id: id, method: method, params: params).payload(), now: now)
        outstanding[id] = Outstanding(method: method, params: params, lastSent: now, attempts: 1)
        return (id, frame)
    }

    /// Forgets a call that will not be sent (its frame did not fit the transport).
    public mutating func cancel(_ id: UInt64) { outstanding[id] = nil }

    public mutating func statusQuery(_ id: UInt64, now: Date) throws -> [UInt8] {
        try sealer.seal(.status, try SessionRPC.Message.status(id: id).payload(), now: now)
    }

    public mutating func close(now: Date) throws -> [UInt8] {
        opener.close()
        return try sealer.seal(.close, [], now: now)
    }

    public mutating func receive(_ frame: [UInt8]) -> Event {
        let opened: SessionOpener.Opened
        switch opener.open(frame) {
        case .failure(let reason): return .dropped(reason)
        case .success(let o): opened = o
        }
        if opened.kind == .close { return .closed }
        guard let message = try? SessionRPC.Message(kind: opened.kind, payload: opened.payload) else { return .dropped(.malformed) }
        switch message {
        case .ack(let id):
            // The server has the call and answers retransmissions with this ack while it runs:
            // attempts count from here, so a slow handler is not given up on while it runs.
            if outstanding[id] != nil { outstanding[id]?.attempts = 1 }
            return .acked(id)
        case .reply(let id, let result):
            outstanding[id] = nil
            return .replied(id, result)
        case .error(let id, let code, let text):
            outstanding[id] = nil
            return .failed(id, code: code, message: text)
        case .statusReply(let id, let status): return .status(id, status)
        case .call, .status: return .dropped(.malformed)  // calls flow from the client only
        }
    }

    /// Datagram transports: calls without an answer after `timeout` are sealed again, at most
    /// `maxAttempts` times in all; the ones given up on are returned too.
    public mutating func retransmissions(now: Date, timeout: TimeInterval, maxAttempts: Int = 5) throws -> (
        frames: [[UInt8]], gaveUp: [UInt64]
    ) {
        var frames: [[UInt8]] = []
        var gaveUp: [UInt64] = []
        for id in outstanding.keys.sorted() {
            guard var call = outstanding[id], now.timeIntervalSince(call.lastSent) >= timeout else { continue }
            if call.attempts >= maxAttempts {
                outstanding[id] = nil
                gaveUp.append(id)
                continue
            }
            frames.append(try sealer.seal(.call, try SessionRPC.Message.call(id: id, method: call.method, params: call.params).payload(), now: now))
            call.attempts += 1
            call.lastSent = now
            outstanding[id] = call
        }
        return (frames, gaveUp)
    }
}

enum SessionEndpoints {
    static func sessionID(_ secrets: SessionSecrets) throws -> [UInt8] {
        guard let raw = Base64URL.decode(secrets.sessionID), raw.count == 16 else {
            throw ATHError(.internalError, "a session id is 16 bytes (base64url)")
        }
        return Array(raw)
    }
}
