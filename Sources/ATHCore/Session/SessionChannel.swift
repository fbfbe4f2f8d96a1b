import Crypto
import Foundation

/// One attachment of a transport to a session (docs/PROTOCOL.md §11, "Channels"), with keys
/// of its own. Sequence numbers start again at every attachment — a new connection, another
/// server instance, a restart — and a nonce must never repeat under one key: fresh keys per
/// channel make that true without a counter shared between instances, and a frame of one
/// channel is refused by every other (`foreign_session`), so nothing recorded on an earlier
/// connection can be replayed into a later one.
public enum SessionChannel {
    public static let nonceSize = 32
    public static let idSize = 16
    /// The header naming the session (its `sid`) on every HTTP request of its channels: the
    /// attach, the HTTP transport's frames and the WebSocket upgrade. A channel lives in the
    /// memory of the instance that attached it, so a load balancer in front of several instances
    /// routes by this header (e.g. nginx `hash $http_ath_session consistent`), which keeps a
    /// session's channels on one instance (docs/OPERATIONS.md, "Session channels").
    public static let routeHeader = "ATH-Session"
    static let label = Array("attn/1 channel".utf8)

    /// How a transport delivers frames, which decides the receive rule.
    public enum Transport: String, Sendable, Codable, CaseIterable {
        case webSocket = "websocket"
        case tcp
        case udp
        case http

        /// The largest frame this transport carries.
        public var maxFrameSize: Int { self == .udp ? SessionChannel.maxDatagram : SessionFrameStream.maxFrameSize }

        /// TCP and WebSocket keep order; UDP datagrams and separate HTTP requests may not.
        public var ordering: SessionOpener.Ordering {
            switch self {
            case .webSocket, .tcp: .stream
            case .udp, .http: .window(64)
            }
        }
    }

    /// The channel's secrets: for each direction, HKDF-SHA256 with the session's secret of that
    /// direction as input key material, both nonces as salt and the label and channel id as info.
    /// The proof key stays the session's; the session id becomes the channel id (it is what the
    /// frame header carries).
    public static func secrets(of session: SessionSecrets, channelID: [UInt8], clientNonce: [UInt8], serverNonce: [UInt8]) throws
        -> SessionSecrets
    {
        guard channelID.count == idSize, clientNonce.count == nonceSize, serverNonce.count == nonceSize else {
            throw ATHError(.malformedMessage, "a channel id is \(idSize) bytes and each channel nonce \(nonceSize)")
        }
        let salt = clientNonce + serverNonce
        let info = label + channelID
        func derive(_ secret: SymmetricKey) -> SymmetricKey {
            HKDF<SHA256>.deriveKey(inputKeyMaterial: secret, salt: salt, info: info, outputByteCount: 32)
        }
        return SessionSecrets(
            sessionID: Base64URL.encode(Data(channelID)), proofKey: session.proofKey, clientToServer: derive(session.clientToServer),
            serverToClient: derive(session.serverToClient))
    }

    /// The client's request to attach (`POST /ath/session/channels`, with its token and proof).
    public struct AttachRequest: Codable, Sendable, Equatable {
        public var transport: Transport
        /// 32 random bytes, base64url.
        public var client_nonce: String

        public init(transport: Transport, client_nonce: String) {
            self.transport = transport
            self.client_nonce = client_nonce
        }
    }

    /// The server's answer: the channel's id, its nonce, and how long the channel may live.
    public struct Attached: Codable, Sendable, Equatable {
        public var channel_id: String
        public var server_nonce: String
        public var transport: Transport
        /// The grant's end (Unix seconds): the server closes the channel then.
        public var expires_at: Int64
        /// Seconds without an authentic frame after which the server forgets the channel.
        public var idle_timeout: Int

        public init(channel_id: String, server_nonce: String, transport: Transport, expires_at: Int64, idle_timeout: Int) {
            self.channel_id = channel_id
            self.server_nonce = server_nonce
            self.transport = transport
            self.expires_at = expires_at
            self.idle_timeout = idle_timeout
        }
    }

    /// The largest frame a UDP datagram carries (65,535 less the IP and UDP headers).
    public static let maxDatagram = 65_507

    /// Decodes a base64url value of an exact size, or says which field is wrong.
    public static func bytes(_ value: String, count: Int, field: String) throws -> [UInt8] {
        guard let raw = Base64URL.decode(value), raw.count == count else {
            throw ATHError(.malformedMessage, "\(field) must be \(count) bytes, base64url")
        }
        return Array(raw)
    }
}

/// Frames on a byte stream (TCP) and in an HTTP body: each preceded by its length as 4 bytes
/// big-endian. A length over `SessionFrameStream.maxFrameSize` ends the stream: it cannot be a
/// frame, and waiting for that many bytes would let a peer hold memory.
public struct SessionFrameStream: Sendable {
    /// A frame with the largest payload (1 MiB), its length prefix, padding and tag.
    public static let maxFrameSize = SessionFrame.headerSize + 4 + SessionSealer.maxPayload + SessionFrame.paddingBlock + SessionFrame.tagSize

    public enum Failure: Error, Equatable {
        case oversized(Int)
    }

    var buffer: [UInt8] = []
    var start = 0

    public init() {}

    public static func encode(_ frame: [UInt8]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(4 + frame.count)
        withUnsafeBytes(of: UInt32(frame.count).bigEndian) { out += $0 }
        out += frame
        return out
    }

    /// Adds received bytes and returns the frames they completed; a partial frame waits.
    public mutating func append<Bytes: Sequence>(_ bytes: Bytes) throws(Failure) -> [[UInt8]] where Bytes.Element == UInt8 {
        buffer.append(contentsOf: bytes)
        var frames: [[UInt8]] = []
        while buffer.count - start >= 4 {
            let length =
                Int(buffer[start]) << 24 | Int(buffer[start + 1]) << 16 | Int(buffer[start + 2]) << 8 | Int(buffer[start + 3])
            guard length <= Self.maxFrameSize else { throw .oversized(length) }
            guard buffer.count - start - 4 >= length else { break }
            frames.append(Array(buffer[(start + 4)..<(start + 4 + length)]))
            start += 4 + length
        }
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start > 64 * 1024 {
            buffer.removeFirst(start)
            start = 0
        }
        return frames
    }

    /// Bytes of a frame not yet complete.
    public var pending: Int { buffer.count - start }

    /// A whole body of length-prefixed frames (HTTP): every byte must belong to a frame.
    public static func decode(_ body: [UInt8], maxFrames: Int) throws -> [[UInt8]] {
        var stream = SessionFrameStream()
        let frames: [[UInt8]]
        do {
            frames = try stream.append(body)
        } catch {
            throw ATHError(.payloadTooLarge, "a frame is at most \(maxFrameSize) bytes")
        }
        guard stream.pending == 0 else { throw ATHError(.malformedMessage, "the body ends inside a frame") }
        guard frames.count <= maxFrames else { throw ATHError(.payloadTooLarge, "at most \(maxFrames) frames per request") }
        return frames
    }
}
