import ATHCore
import Crypto
import Foundation

/// libFuzzer's view of the session layer's receive side: whatever the bytes, nothing crashes,
/// hangs or opens that was not sealed with the key. The first byte picks what the rest is:
///
/// - 0: a frame from the network (sealed with a key the receivers do not hold, or not sealed
///   at all), given to both endpoints and to a datagram opener;
/// - 1: an authentic frame (sealed here with the fixed key) whose kind and payload are the
///   input: what a peer holding the keys could send, down to the RPC decoder;
/// - 2: bytes of a TCP stream or an HTTP body, cut into frames;
/// - 3: a genuine frame with the input's bytes XORed in: it opens only if nothing changed.
enum SessionFrameFuzz {
    static let secret = SymmetricKey(data: [UInt8](repeating: 0x11, count: 32))
    static let sessionID = (0..<16).map(UInt8.init)
    static let secrets = SessionSecrets(
        sessionID: Base64URL.encode(Data(sessionID)), proofKey: secret, clientToServer: secret,
        serverToClient: SymmetricKey(data: [UInt8](repeating: 0x22, count: 32)))
    static let now = Date(timeIntervalSince1970: 1_800_000_000)
    /// Mode 0's receivers hold this key, which no input was sealed with (the seeds are the
    /// document's vectors, sealed with `secret`): nothing may open.
    static let unknownToSenders = SessionSecrets(
        sessionID: Base64URL.encode(Data(sessionID)), proofKey: secret, clientToServer: SymmetricKey(data: [UInt8](repeating: 0x5a, count: 32)),
        serverToClient: SymmetricKey(data: [UInt8](repeating: 0x5b, count: 32)))

    static func run(_ input: [UInt8]) {
        guard let mode = input.first else { return }
        let body = Array(input.dropFirst())
        switch mode % 4 {
        case 0: fromTheNetwork(body)
        case 1: authentic(body)
        case 2: stream(body)
        default: mutated(body)
        }
    }

    static func fromTheNetwork(_ frame: [UInt8]) {
        var opener = SessionOpener(
            keys: SessionTrafficKeys(secret: unknownToSenders.clientToServer, suite: .aes256gcm), direction: .clientToServer,
            sessionID: sessionID, ordering: .window(64))
        if case .success = opener.open(frame) { fatalError("bytes that were never sealed opened") }
        var server = try! ServerSessionEndpoint(secrets: unknownToSenders, suite: .aes256gcm, ordering: .stream, now: now)
        for effect in server.receive(frame, now: now) {
            guard case .dropped = effect else { fatalError("an unsealed frame had an effect: \(effect)") }
        }
        var client = try! ClientSessionEndpoint(secrets: unknownToSenders, suite: .aes256gcm, ordering: .window(64), now: now)
        guard case .dropped = client.receive(frame) else { fatalError("an unsealed frame reached the client") }
    }

    static func authentic(_ body: [UInt8]) {
        guard let first = body.first, let kind = SessionFrame.Kind(rawValue: first % 8 + 1) else { return }
        let payload = Array(body.dropFirst())
        // Client → server: calls, status queries, and everything a client should not send.
        var sealer = SessionSealer(
            keys: SessionTrafficKeys(secret: secret, suite: .aes256gcm), direction: .clientToServer, sessionID: sessionID, now: now)
        guard let frame = try? sealer.seal(kind, payload, now: now) else { return }
        var server = try! ServerSessionEndpoint(secrets: secrets, suite: .aes256gcm, ordering: .stream, now: now)
        for effect in server.receive(frame, now: now) {
            if case .invoke(let id, _, _) = effect { _ = try? server.answer(id, .success(.null), now: now) }
        }
        _ = server.receive(frame, now: now)  // the same frame again: a replay
        // Server → client: answers, and what a server should not send.
        var toClient = SessionSealer(
            keys: SessionTrafficKeys(secret: secrets.serverToClient, suite: .aes256gcm), direction: .serverToClient,
            sessionID: sessionID, now: now)
        guard let answer = try? toClient.seal(kind, payload, now: now) else { return }
        var client = try! ClientSessionEndpoint(secrets: secrets, suite: .aes256gcm, ordering: .stream, now: now)
        _ = try? client.call("goods.search", [:], now: now)
        _ = client.receive(answer)
        _ = try? SessionRPC.Message(kind: kind, payload: payload)
    }

    static func stream(_ bytes: [UInt8]) {
        _ = try? SessionFrameStream.decode(bytes, maxFrames: 64)
        guard let first = bytes.first else { return }
        let chunk = Int(first) + 1
        var stream = SessionFrameStream()
        var offset = 0
        while offset < bytes.count {
            guard (try? stream.append(bytes[offset..<min(offset + chunk, bytes.count)])) != nil else { return }
            offset += chunk
        }
    }

    static func mutated(_ mask: [UInt8]) {
        var sealer = SessionSealer(
            keys: SessionTrafficKeys(secret: secret, suite: .aes256gcm), direction: .clientToServer, sessionID: sessionID, now: now)
        var frame = try! sealer.seal(.call, Array(#"{"id":1,"method":"goods.search","params":{"keyword":"phone"}}"#.utf8), now: now)
        let original = frame
        for (i, byte) in mask.enumerated() where i < frame.count { frame[i] ^= byte }
        if mask.count > frame.count { frame += mask[frame.count...] }
        var opener = SessionOpener(
            keys: SessionTrafficKeys(secret: secret, suite: .aes256gcm), direction: .clientToServer, sessionID: sessionID)
        if case .success = opener.open(frame), frame != original { fatalError("an altered frame opened") }
    }
}
