import Crypto
import Foundation

/// When a sender moves to the next key epoch: well inside AES-GCM's safe use of one key (TLS 1.3
/// allows 2^24.5 records) and the 24 hours ATH allows a session key.
public struct KeyUpdatePolicy: Sendable, Equatable {
    public var maxMessages: UInt64
    public var maxBytes: UInt64
    public var maxAge: TimeInterval

    public init(maxMessages: UInt64 = 1 << 23, maxBytes: UInt64 = 1 << 36, maxAge: TimeInterval = 3600) {
        self.maxMessages = maxMessages
        self.maxBytes = maxBytes
        self.maxAge = maxAge
    }
}

/// The sending half of a session: numbers, pads and seals frames in one direction. A value type
/// with no I/O; transports carry the bytes it returns.
public struct SessionSealer: Sendable {
    public let direction: SessionFrame.Direction
    public let sessionID: [UInt8]
    public var policy: KeyUpdatePolicy
    public private(set) var keys: SessionTrafficKeys
    /// Settable inside the module (and by tests) to reach the end of the number space.
    public internal(set) var nextSequence: UInt64 = 0
    public private(set) var closed = false
    var messagesInEpoch: UInt64 = 0
    var bytesInEpoch: UInt64 = 0
    var epochStarted: Date

    public init(
        keys: SessionTrafficKeys, direction: SessionFrame.Direction, sessionID: [UInt8], policy: KeyUpdatePolicy = .init(), now: Date
    ) {
        precondition(sessionID.count == 16, "a session id is 16 bytes")
        self.keys = keys
        self.direction = direction
        self.sessionID = sessionID
        self.policy = policy
        epochStarted = now
    }

    /// The largest payload one frame carries (a UDP datagram holds a little less).
    public static let maxPayload = 1 << 20

    /// Seals `payload` as one frame of `kind`. Moves to the next key epoch first when the
    /// current one is used up; the receiver follows on the first frame of the new epoch.
    public mutating func seal(_ kind: SessionFrame.Kind, _ payload: [UInt8], now: Date) throws -> [UInt8] {
        guard !closed else { throw SessionRefusal.closed }
        // The last number is never sent: receivers refuse it (it has no successor).
        guard nextSequence < .max else { throw SessionRefusal.closed }
        guard payload.count <= Self.maxPayload else {
            throw ATHError(.payloadTooLarge, "a session frame carries at most \(Self.maxPayload) bytes")
        }
        if messagesInEpoch >= policy.maxMessages || bytesInEpoch >= policy.maxBytes || now.timeIntervalSince(epochStarted) >= policy.maxAge
        {
            try advanceEpoch(now: now)
        }
        let padded = (4 + payload.count + SessionFrame.paddingBlock - 1) / SessionFrame.paddingBlock * SessionFrame.paddingBlock
        let header = SessionFrame.Header(kind: kind, direction: direction, epoch: keys.epoch, sessionID: sessionID, sequence: nextSequence)
            .bytes(reservingCapacity: padded + SessionFrame.tagSize)
        var plaintext = [UInt8]()
        plaintext.reserveCapacity(padded)
        withUnsafeBytes(of: UInt32(payload.count).bigEndian) { plaintext += $0 }
        plaintext += payload
        plaintext += repeatElement(0, count: padded - plaintext.count)
        let frame = try keys.seal(plaintext, sequence: nextSequence, header: header)
        nextSequence += 1
        messagesInEpoch += 1
        bytesInEpoch += UInt64(padded)
        if kind == .close { closed = true }
        return frame
    }

    /// Announces and performs a key update now (a `keyUpdate` frame in the old epoch).
    public mutating func keyUpdate(now: Date) throws -> [UInt8] {
        let frame = try seal(.keyUpdate, [], now: now)
        try advanceEpoch(now: now)
        return frame
    }

    mutating func advanceEpoch(now: Date) throws {
        guard let next = keys.next() else {
            closed = true
            throw SessionRefusal.closed  // 256 epochs used: the session must be established again
        }
        keys = next
        messagesInEpoch = 0
        bytesInEpoch = 0
        epochStarted = now
    }
}
