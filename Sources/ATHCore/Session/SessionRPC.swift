import Foundation

/// The RPC carried by session frames (docs/PROTOCOL.md §11, "RPC"): what each frame kind's
/// payload holds. Payloads are canonical JSON objects; the call id is the client's, unique and
/// increasing within the session, and names the call in its ack, reply, error and status.
public enum SessionRPC {
    public enum Status: String, Sendable, Codable, Equatable {
        /// The server has never seen this id (not yet arrived, or lost).
        case unknown
        /// Received and acknowledged, its handler not yet started.
        case delivered
        /// Its handler is running.
        case pending
        /// Answered with a reply.
        case processed
        /// Answered with an error.
        case failed
    }

    public enum Message: Sendable, Equatable {
        case call(id: UInt64, method: String, params: JSONValue)
        case reply(id: UInt64, result: JSONValue)
        case ack(id: UInt64)
        case status(id: UInt64)
        case statusReply(id: UInt64, status: Status)
        case error(id: UInt64, code: String, message: String)

        public var id: UInt64 {
            switch self {
            case .call(let id, _, _), .reply(let id, _), .ack(let id), .status(let id), .statusReply(let id, _), .error(let id, _, _): id
            }
        }

        public var kind: SessionFrame.Kind {
            switch self {
            case .call: .call
            case .reply: .reply
            case .ack: .ack
            case .status: .status
            case .statusReply: .statusReply
            case .error: .error
            }
        }

        public func payload() throws -> [UInt8] {
            let id = JSONValue.integer(Int64(bitPattern: self.id))
            let object: JSONValue =
                switch self {
                case .call(_, let method, let params): ["id": id, "method": .string(method), "params": params]
                case .reply(_, let result): ["id": id, "result": result]
                case .ack, .status: ["id": id]
                case .statusReply(_, let status): ["id": id, "status": .string(status.rawValue)]
                case .error(_, let code, let message): ["id": id, "code": .string(code), "message": .string(message)]
                }
            return Array(try CanonicalJSON.bytes(object))
        }

        /// Reads an opened frame's payload; a frame kind without an RPC meaning (key update,
        /// close) or a payload that does not fit its kind is malformed.
        public init(kind: SessionFrame.Kind, payload: some DataProtocol) throws {
            let bad = ATHError(.malformedMessage, "this \(kind) frame's payload is not its RPC message")
            guard case .object(let fields) = try? JSONValue.parse(payload), case .integer(let raw)? = fields["id"], (0...JSONValue.safeIntegers.upperBound).contains(raw)
        else {
                throw bad
            }
            let id = UInt64(raw)
            switch kind {
            case .call:
                guard let method = fields["method"]?.stringValue, Self.validMethod(method) else { throw bad }
                self = .call(id: id, method: method, params: fields["params"] ?? .null)
            case .reply: self = .reply(id: id, result: fields["result"] ?? .null)
            case .ack: self = .ack(id: id)
            case .status: self = .status(id: id)
            case .statusReply:
                guard let status = fields["status"]?.stringValue.flatMap(Status.init(rawValue:)) else { throw bad }
                self = .statusReply(id: id, status: status)
            case .error:
                guard let code = fields["code"]?.stringValue else { throw bad }
                self = .error(id: id, code: code, message: fields["message"]?.stringValue ?? "")
            case .keyUpdate, .close: throw bad
            }
        }

        /// Method names: 1-128 of `A-Za-z0-9._-`, like a route's last segments.
        public static func validMethod(_ name: String) -> Bool {
            (1...128).contains(name.utf8.count)
                && name.utf8.allSatisfy { b in
                    (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || b == 0x2E || b == 0x5F || b == 0x2D
                }
        }
    }

    /// The server's memory of calls, for acknowledgements, status queries and duplicates: a
    /// datagram client that retransmits a call gets the same answer again, never a second run.
    public struct CallLedger: Sendable {
        public enum Decision: Sendable, Equatable {
            /// New: acknowledge it and run its handler.
            case run
            /// Seen before: answer with what was sent (ack while running, or the stored answer).
            case repeatAnswer(Message)
            /// Below the ledger's floor: too old to be told apart from a replay.
            case refuse(Message)
        }

        var calls: [UInt64: (status: Status, answer: Message?)] = [:]
        /// Ids in the order they arrived, from `head` on: the one forgotten first is the oldest
        /// to arrive (no scan of the ledger per call).
        var arrivals: [UInt64] = []
        var head = 0
        /// Ids at or below this were forgotten; new calls must be above it.
        var floor: UInt64 = 0
        var hasFloor = false
        public let capacity: Int

        public init(capacity: Int = 1024) { self.capacity = capacity }

        public mutating func receive(callID id: UInt64) -> Decision {
            if let known = calls[id] { return .repeatAnswer(known.answer ?? .ack(id: id)) }
            if hasFloor, id <= floor {
                return .refuse(.error(id: id, code: ATHError.Code.malformedMessage.rawValue, message: "call id \(id) is too old"))
            }
            calls[id] = (.delivered, nil)
            arrivals.append(id)
            if calls.count > capacity {
                let oldest = arrivals[head]
                head += 1
                calls[oldest] = nil
                floor = max(floor, oldest)
                hasFloor = true
                if head >= capacity {
                    arrivals.removeFirst(head)
                    head = 0
                }
            }
            return .run
        }

        public mutating func started(_ id: UInt64) { calls[id]?.status = .pending }

        /// Records the answer the server sends for a call.
        public mutating func answered(_ answer: Message) {
            guard calls[answer.id] != nil else { return }
            if case .error = answer { calls[answer.id] = (.failed, answer) } else { calls[answer.id] = (.processed, answer) }
        }

        public func status(of id: UInt64) -> Status { calls[id]?.status ?? .unknown }
    }
}
