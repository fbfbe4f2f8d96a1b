import Foundation

/// The receiving half of a session: checks, in this order, everything that can be checked
/// without the key (size, version, session id, direction, epoch, sequence), then the AEAD tag,
/// and only then reads the plaintext. The sequence window moves only after the tag verified, so
/// forged frames cannot push genuine ones out. Every refusal is counted by reason.
public struct SessionOpener: Sendable {
    /// Stream transports (TCP, WebSocket) deliver in order: the next number or nothing.
    /// Datagrams (UDP) and separate HTTP requests may be lost or reordered: any number not seen
    /// within the last `window`.
    public enum Ordering: Sendable, Equatable {
        case stream
        case window(Int)
    }

    public struct Opened: Sendable, Equatable {
        public var kind: SessionFrame.Kind
        public var sequence: UInt64
        public var epoch: UInt8
        /// The frame's payload: a slice of the opened plaintext.
        public var payload: Data
    }

    /// The direction of the frames this opener accepts (the peer's sending direction).
    public let direction: SessionFrame.Direction
    public let sessionID: [UInt8]
    public let ordering: Ordering
    public private(set) var keys: SessionTrafficKeys
    /// Kept in window mode so that a datagram sealed just before the peer's key update still opens.
    var previous: SessionTrafficKeys?
    public private(set) var closed = false
    public private(set) var refusals: [SessionRefusal: Int] = [:]
    /// Stream: the next expected number. Window: one more than the highest accepted.
    var next: UInt64 = 0
    /// Window: bit i set = (next - 1 - i) was accepted.
    var seen: UInt64 = 0

    public init(keys: SessionTrafficKeys, direction: SessionFrame.Direction, sessionID: [UInt8], ordering: Ordering = .stream) {
        precondition(sessionID.count == 16, "a session id is 16 bytes")
        if case .window(let size) = ordering { precondition((1...64).contains(size), "the replay window holds 1-64 numbers") }
        self.keys = keys
        self.direction = direction
        self.sessionID = sessionID
        self.ordering = ordering
    }

    /// Opens one frame, or says why it was dropped (and counts it).
    public mutating func open(_ frame: [UInt8]) -> Result<Opened, SessionRefusal> {
        let result = attempt(frame[...])
        if case .failure(let reason) = result { refusals[reason, default: 0] += 1 }
        return result
    }

    /// Ends the session locally (its grant ended or was revoked): everything after is refused.
    public mutating func close() { closed = true }

    mutating func attempt(_ frame: ArraySlice<UInt8>) -> Result<Opened, SessionRefusal> {
        let header: (kind: SessionFrame.Kind, direction: SessionFrame.Direction, epoch: UInt8, sequence: UInt64)
        switch SessionFrame.Header.fields(frame) {
        case .failure(let reason): return .failure(reason)
        case .success(let h): header = h
        }
        guard frame[(frame.startIndex + 4)..<(frame.startIndex + 20)].elementsEqual(sessionID) else { return .failure(.foreignSession) }
        guard header.direction == direction else { return .failure(.reflected) }
        guard !closed else { return .failure(.closed) }
        // Which keys: the current epoch, the next one (the peer updated), or in window mode the previous.
        let epochKeys: SessionTrafficKeys
        if header.epoch == keys.epoch {
            epochKeys = keys
        } else if header.epoch == keys.epoch &+ 1, keys.epoch < UInt8.max, let upcoming = keys.next() {
            epochKeys = upcoming
        } else if let previous, header.epoch == previous.epoch {
            epochKeys = previous
        } else {
            return .failure(.staleEpoch)
        }
        if let refusal = sequenceRefusal(header.sequence) { return .failure(refusal) }
        let start = frame.startIndex
        guard
            let plaintext = epochKeys.open(
                frame[(start + SessionFrame.headerSize)...], sequence: header.sequence,
                header: frame[start..<(start + SessionFrame.headerSize)])
        else { return .failure(.tampered) }
        // Authentic from here on; a bad inner length is the peer's bug, still never passed on.
        // Read through the raw bytes (Data's iterator goes a byte at a time); the payload is a
        // slice of the opened plaintext, not a copy.
        let length: Int? = plaintext.withUnsafeBytes { bytes in
            guard bytes.count >= 4 else { return nil }
            let length = Int(bytes[0]) << 24 | Int(bytes[1]) << 16 | Int(bytes[2]) << 8 | Int(bytes[3])
            guard length <= bytes.count - 4, bytes[(4 + length)...].allSatisfy({ $0 == 0 }) else { return nil }
            return length
        }
        guard let length else { return .failure(.malformed) }
        let first = plaintext.startIndex + 4
        let payload = plaintext[first..<(first + length)]
        accept(header.sequence)
        if epochKeys.epoch == keys.epoch &+ 1 {
            previous = keys
            keys = epochKeys
        }
        if header.kind == .close { closed = true }
        return .success(Opened(kind: header.kind, sequence: header.sequence, epoch: header.epoch, payload: payload))
    }

    func sequenceRefusal(_ sequence: UInt64) -> SessionRefusal? {
        // The last number has no successor to expect next (`accept` would trap on it). A sender
        // updates keys long before; one that sends it anyway, even with valid keys, is refused.
        if sequence == .max { return .malformed }
        switch ordering {
        case .stream:
            if sequence < next { return .replayed }
            if sequence > next { return .reordered }
            return nil
        case .window(let size):
            if sequence >= next { return nil }
            let age = next - 1 - sequence
            if age >= UInt64(size) { return .reordered }
            return seen & (1 << age) != 0 ? .replayed : nil
        }
    }

    mutating func accept(_ sequence: UInt64) {
        switch ordering {
        case .stream:
            next = sequence + 1
        case .window:
            if sequence >= next {
                let shift = sequence - next + 1
                seen = shift >= 64 ? 0 : seen << shift
                seen |= 1
                next = sequence + 1
            } else {
                seen |= 1 << (next - 1 - sequence)
            }
        }
    }
}
