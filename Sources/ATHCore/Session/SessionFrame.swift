import Foundation

/// One frame of the encrypted session layer (ATTNProto, made sound; docs/PROTOCOL.md §11). The
/// seed's shape `session_id | msg_key | encrypted_data` is kept, but the header that comes
/// before the ciphertext is the AEAD's associated data and carries what MTProto left out: the
/// direction, the key epoch and a strictly increasing sequence number.
///
///     offset  size  field
///     0       1     version (1)
///     1       1     kind
///     2       1     direction: 0 client→server, 1 server→client
///     3       1     key epoch (0-255, advanced by key updates)
///     4       16    channel id (the seed calls it the session id; each channel has its own keys)
///     20      8     sequence, big-endian, per direction, never reused
///     28      n+16  AEAD(payload length u32 | payload | zero padding) and its tag
public enum SessionFrame {
    public static let version: UInt8 = 1
    public static let headerSize = 28
    public static let tagSize = 16
    /// The plaintext (length prefix, payload, padding) is a whole number of these blocks, so the
    /// ciphertext's length tells only a length class.
    public static let paddingBlock = 64
    public static var minimumSize: Int { headerSize + paddingBlock + tagSize }

    public enum Kind: UInt8, Sendable, CaseIterable, Codable {
        case call = 1
        case reply = 2
        /// Receipt acknowledgement of a call (the server has it; not yet its result).
        case ack = 3
        /// Status query for a message id: pending, delivered, processed or failed.
        case status = 4
        case statusReply = 5
        case error = 6
        /// The sender moves to the next key epoch after this frame.
        case keyUpdate = 7
        /// The sender ends the session; nothing after it is accepted.
        case close = 8
    }

    public enum Direction: UInt8, Sendable, Codable {
        case clientToServer = 0
        case serverToClient = 1

        public var reversed: Direction { self == .clientToServer ? .serverToClient : .clientToServer }
    }

    public struct Header: Sendable, Equatable {
        public var kind: Kind
        public var direction: Direction
        public var epoch: UInt8
        public var sessionID: [UInt8]
        public var sequence: UInt64

        public init(kind: Kind, direction: Direction, epoch: UInt8, sessionID: [UInt8], sequence: UInt64) {
            self.kind = kind
            self.direction = direction
            self.epoch = epoch
            self.sessionID = sessionID
            self.sequence = sequence
        }

        public var bytes: [UInt8] { bytes(reservingCapacity: 0) }

        /// The header in a buffer with room for `extra` more bytes (the rest of the frame).
        public func bytes(reservingCapacity extra: Int) -> [UInt8] {
            var out: [UInt8] = []
            out.reserveCapacity(SessionFrame.headerSize + extra)
            out.append(SessionFrame.version)
            out.append(kind.rawValue)
            out.append(direction.rawValue)
            out.append(epoch)
            out += sessionID
            withUnsafeBytes(of: sequence.bigEndian) { out += $0 }
            return out
        }

        /// Reads the header of a frame; the reason is what the receiver counts.
        public static func parse(_ frame: ArraySlice<UInt8>) -> Result<Header, SessionRefusal> {
            fields(frame).map { f in
                let start = frame.startIndex
                return Header(
                    kind: f.kind, direction: f.direction, epoch: f.epoch, sessionID: Array(frame[(start + 4)..<(start + 20)]),
                    sequence: f.sequence)
            }
        }

        /// The header's fields but the session id, read without allocating (the receiver
        /// compares the id where it lies).
        static func fields(_ frame: ArraySlice<UInt8>) -> Result<
            (kind: Kind, direction: Direction, epoch: UInt8, sequence: UInt64), SessionRefusal
        > {
            guard frame.count >= SessionFrame.minimumSize else { return .failure(.truncated) }
            let start = frame.startIndex
            guard frame[start] == SessionFrame.version else { return .failure(.malformed) }
            guard let kind = Kind(rawValue: frame[start + 1]), let direction = Direction(rawValue: frame[start + 2]) else {
                return .failure(.malformed)
            }
            guard (frame.count - SessionFrame.headerSize - SessionFrame.tagSize) % SessionFrame.paddingBlock == 0 else {
                return .failure(.truncated)
            }
            var sequence: UInt64 = 0
            for byte in frame[(start + 20)..<(start + 28)] { sequence = sequence << 8 | UInt64(byte) }
            return .success((kind, direction, frame[start + 3], sequence))
        }
    }
}

/// Why a frame was dropped. Each is counted (`SessionOpener.refusals`) and none lets a byte of
/// the frame reach the application.
public enum SessionRefusal: String, Sendable, CaseIterable, Error {
    /// Shorter than a header, a padding block and a tag, or not a whole number of blocks.
    case truncated
    /// Unknown version or kind, or a bad length or padding inside an authentic frame.
    case malformed
    /// Another session's id.
    case foreignSession = "foreign_session"
    /// Marked with the receiver's own sending direction: our frame sent back to us.
    case reflected
    /// A sequence number already accepted.
    case replayed
    /// Out of order: ahead of the next expected number on a stream, or behind the UDP window.
    case reordered
    /// A key epoch the receiver has left or cannot reach.
    case staleEpoch = "stale_epoch"
    /// The AEAD tag does not verify: altered, or sealed under another key.
    case tampered
    /// After a close frame, or once the session was ended locally.
    case closed
}
