import Crypto
import Foundation
import Testing

@testable import ATHCore
import ATHTestSupport

/// Both ends of one session, from fixed per-direction secrets.
struct SessionPair {
    static let sessionID = Array(0..<16).map(UInt8.init)
    static let c2s = SymmetricKey(data: Array(repeating: UInt8(0x11), count: 32))
    static let s2c = SymmetricKey(data: Array(repeating: UInt8(0x22), count: 32))
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    var client: SessionSealer
    var server: SessionOpener

    init(suite: SessionCipherSuite = .aes256gcm, ordering: SessionOpener.Ordering = .stream, policy: KeyUpdatePolicy = .init()) {
        client = SessionSealer(
            keys: SessionTrafficKeys(secret: Self.c2s, suite: suite), direction: .clientToServer, sessionID: Self.sessionID, policy: policy,
            now: now)
        server = SessionOpener(
            keys: SessionTrafficKeys(secret: Self.c2s, suite: suite), direction: .clientToServer, sessionID: Self.sessionID, ordering: ordering)
    }

    mutating func send(_ kind: SessionFrame.Kind = .call, _ text: String = "x") throws -> [UInt8] {
        try client.seal(kind, Array(text.utf8), now: now)
    }
}

@Suite struct SessionLayerTests {
    @Test(arguments: SessionCipherSuite.allCases)
    func everyKindAndSizeRoundTrips(_ suite: SessionCipherSuite) throws {
        var pair = SessionPair(suite: suite)
        for (index, kind) in SessionFrame.Kind.allCases.filter({ $0 != .close }).enumerated() {
            for size in [0, 1, 59, 60, 61, 1000] {
                let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ index) }
                let frame = try pair.client.seal(kind, payload, now: pair.now)
                // Length classes only: the padded plaintext is whole 64-byte blocks.
                #expect((frame.count - SessionFrame.headerSize - SessionFrame.tagSize) % SessionFrame.paddingBlock == 0)
                #expect(frame.count == SessionFrame.headerSize + SessionFrame.tagSize + (size + 4 + 63) / 64 * 64)
                let opened = try pair.server.open(frame).get()
                #expect(opened.kind == kind)
                #expect(Array(opened.payload) == payload)
            }
        }
        #expect(pair.server.refusals.isEmpty)
    }

    @Test func replayedReorderedReflectedTruncatedTamperedAndForeignFramesAreDroppedAndCounted() throws {
        var pair = SessionPair()
        let first = try pair.send()
        let second = try pair.send()
        #expect(pair.server.open(second) == .failure(.reordered))  // ahead of the next expected on a stream
        #expect(try pair.server.open(first).get().sequence == 0)
        #expect(pair.server.open(first) == .failure(.replayed))
        let third = try pair.send()
        #expect(pair.server.open(Array(second.dropLast())) == .failure(.truncated))
        #expect(pair.server.open(Array(second.prefix(20))) == .failure(.truncated))
        var flipped = second
        flipped[SessionFrame.headerSize + 3] ^= 0x01
        #expect(pair.server.open(flipped) == .failure(.tampered))
        var relabeled = second
        relabeled[1] = SessionFrame.Kind.reply.rawValue  // the header is authenticated too
        #expect(pair.server.open(relabeled) == .failure(.tampered))
        // The client's own frame sent back to it: its opener takes server-to-client frames only.
        var clientOpener = SessionOpener(
            keys: SessionTrafficKeys(secret: SessionPair.s2c, suite: .aes256gcm), direction: .serverToClient, sessionID: SessionPair.sessionID)
        #expect(clientOpener.open(third) == .failure(.reflected))
        // Relabeling the direction does not help: the other direction's key does not open it.
        var turned = first  // sequence 0, what this opener expects next
        turned[2] = SessionFrame.Direction.serverToClient.rawValue
        #expect(clientOpener.open(turned) == .failure(.tampered))
        var foreign = third
        foreign[4] ^= 0xFF
        #expect(pair.server.open(foreign) == .failure(.foreignSession))
        // None of this moved the stream: the genuine frames still open in order.
        #expect(try pair.server.open(second).get().sequence == 1)
        #expect(try pair.server.open(third).get().sequence == 2)
        #expect(pair.server.refusals == [.reordered: 1, .replayed: 1, .truncated: 2, .tampered: 2, .foreignSession: 1])
        #expect(clientOpener.refusals == [.reflected: 1, .tampered: 1])
    }

    @Test func theUDPWindowTakesLateFramesOnceAndForgeriesDoNotMoveIt() throws {
        var pair = SessionPair(ordering: .window(8))
        let frames = try (0..<12).map { _ in try pair.send() }
        for i in [0, 3, 2, 1] { #expect(try pair.server.open(frames[i]).get().sequence == UInt64(i)) }
        #expect(pair.server.open(frames[2]) == .failure(.replayed))
        // A forged frame with a far-ahead sequence fails its tag and leaves the window where it was.
        var forged = try pair.send()
        forged[27] = 200
        forged[SessionFrame.headerSize] ^= 1
        #expect(pair.server.open(forged) == .failure(.tampered))
        #expect(try pair.server.open(frames[11]).get().sequence == 11)
        #expect(try pair.server.open(frames[5]).get().sequence == 5)  // 6 behind: inside the window of 8
        #expect(pair.server.open(frames[2]) == .failure(.reordered))  // 9 behind: outside it
        #expect(pair.server.open(frames[11]) == .failure(.replayed))
    }

    @Test func keysAreUpdatedByPolicyOrOnDemandAndTheReceiverFollows() throws {
        var pair = SessionPair(policy: KeyUpdatePolicy(maxMessages: 3))
        var epochs: [UInt8] = []
        for _ in 0..<7 { epochs.append(try pair.server.open(try pair.send()).get().epoch) }
        #expect(epochs == [0, 0, 0, 1, 1, 1, 2])
        let announce = try pair.client.keyUpdate(now: pair.now)
        #expect(try pair.server.open(announce).get().kind == .keyUpdate)
        #expect(try pair.server.open(try pair.send()).get().epoch == 3)
        // Each epoch's key differs, and the keys of one direction never open the other's frames.
        let k0 = SessionTrafficKeys(secret: SessionPair.c2s, suite: .aes256gcm)
        #expect(k0.keyBytes != k0.next()!.keyBytes)
        #expect(k0.keyBytes != SessionTrafficKeys(secret: SessionPair.s2c, suite: .aes256gcm).keyBytes)
        // After an hour the sender moves on by itself.
        var aged = SessionPair()
        #expect(try aged.server.open(try aged.send()).get().epoch == 0)
        let later = try aged.client.seal(.call, [], now: aged.now.addingTimeInterval(3600))
        #expect(try aged.server.open(later).get().epoch == 1)
    }

    @Test func aCloseEndsBothSidesAndALocalCloseRefusesEverything() throws {
        var pair = SessionPair()
        let bye = try pair.send(.close, "")
        #expect(throws: SessionRefusal.closed) { try pair.send() }
        #expect(try pair.server.open(bye).get().kind == .close)
        var other = SessionPair()
        let frame = try other.send()
        other.server.close()  // e.g. the grant was revoked
        #expect(other.server.open(frame) == .failure(.closed))
    }
}

/// The step-9 key schedule is HKDF-SHA256 written on HMAC (KeySchedule.swift): it must give
/// what swift-crypto's own HKDF gives, for any shared secret and transcript hash.
@Suite struct KeyScheduleTests {
    @Test func equalsSwiftCryptosHKDF() {
        var rng = SystemRandomNumberGenerator()
        for round in 0..<50 {
            let ikm = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
            // Empty, short, hash-sized and longer-than-a-block salts.
            let salt = Data((0..<[0, 7, 32, 65, 200][round % 5]).map { _ in UInt8.random(in: 0...255, using: &rng) })
            let ours = ikm.withUnsafeBytes { SessionSecrets(inputKeyMaterial: $0, salt: salt) }
            func hkdf(_ label: String, _ count: Int) -> Data {
                HKDF<SHA256>.deriveKey(
                    inputKeyMaterial: SymmetricKey(data: ikm), salt: salt, info: Data(label.utf8), outputByteCount: count
                ).bytes
            }
            #expect(ours.sessionID == Base64URL.encode(hkdf("ath/0.1 sid", 16)))
            #expect(ours.proofKey.bytes == hkdf("ath/0.1 pop", 32))
            #expect(ours.clientToServer.bytes == hkdf("ath/0.1 c2s", 32))
            #expect(ours.serverToClient.bytes == hkdf("ath/0.1 s2c", 32))
            #expect(ours.clientToServer != ours.serverToClient)
        }
    }
}

/// The published vectors (docs/PROTOCOL.md §11): what this implementation seals, checked against
/// an independent sealer written from the document on PyCA `cryptography`
/// (Vectors/attn_reference.py), and against the numbers printed in the document.
@Suite struct SessionVectorTests {
    static let frames: [(SessionFrame.Kind, String)] = [
        (.call, #"{"id":1,"method":"goods.search","params":{"keyword":"phone"}}"#), (.reply, #"{"id":1,"result":[]}"#),
        (.ack, #"{"id":1}"#), (.status, #"{"id":1}"#), (.statusReply, #"{"id":1,"status":"processed"}"#),
        (.error, #"{"code":"SCOPE_INSUFFICIENT","id":2,"message":"this call needs scope user:profile"}"#), (.keyUpdate, ""), (.close, ""),
    ]

    /// Each vector's payload is the canonical form of an RPC message of its kind, as the table
    /// in §11 says payloads are.
    @Test func vectorPayloadsAreCanonicalRPCMessages() throws {
        for (kind, text) in Self.frames where kind != .keyUpdate && kind != .close {
            let message = try SessionRPC.Message(kind: kind, payload: Array(text.utf8))
            #expect(try message.payload() == Array(text.utf8), "\(kind)")
        }
    }

    static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    func sealed() throws -> (SessionTrafficKeys, [[UInt8]]) {
        let keys = SessionTrafficKeys(secret: SessionPair.c2s, suite: .aes256gcm)
        var sealer = SessionSealer(keys: keys, direction: .clientToServer, sessionID: SessionPair.sessionID, now: Date())
        return (keys, try Self.frames.map { try sealer.seal($0.0, Array($0.1.utf8), now: Date()) })
    }

    /// The channel vector: the session's secrets above, client nonce 33…, server nonce 44…,
    /// channel id f0…ff.
    static let channelInput = (
        clientNonce: [UInt8](repeating: 0x33, count: 32), serverNonce: [UInt8](repeating: 0x44, count: 32),
        channelID: Array(0xf0...0xff).map(UInt8.init)
    )

    static func channelSecrets() throws -> SessionSecrets {
        let session = SessionSecrets(
            sessionID: Base64URL.encode(Data(SessionPair.sessionID)), proofKey: SymmetricKey(size: .bits256), clientToServer: SessionPair.c2s,
            serverToClient: SessionPair.s2c)
        return try SessionChannel.secrets(
            of: session, channelID: channelInput.channelID, clientNonce: channelInput.clientNonce, serverNonce: channelInput.serverNonce)
    }

    @Test func anIndependentSealerWrittenFromTheDocumentAgrees() throws {
        let (keys, frames) = try sealed()
        let channel = try Self.channelSecrets()
        let request: JSONValue = [
            "channel": [
                "c2s": .string(Self.hex(Array(SessionPair.c2s.bytes))), "s2c": .string(Self.hex(Array(SessionPair.s2c.bytes))),
                "client_nonce": .string(Self.hex(Self.channelInput.clientNonce)),
                "server_nonce": .string(Self.hex(Self.channelInput.serverNonce)), "channel_id": .string(Self.hex(Self.channelInput.channelID)),
            ],
            "secret": .string(Self.hex(Array(SessionPair.c2s.bytes))), "session_id": .string(Self.hex(SessionPair.sessionID)),
            "frames": .array(
                Self.frames.enumerated().map { index, frame in
                    [
                        "kind": .integer(Int64(frame.0.rawValue)), "sequence": .integer(Int64(index)),
                        "payload": .string(Self.hex(Array(frame.1.utf8))),
                    ]
                }),
        ]
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", VectorTests.directory.appendingPathComponent("attn_reference.py").path]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        input.fileHandleForWriting.write(try JSONEncoder().encode(request))
        try input.fileHandleForWriting.close()
        let answer = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "python3 with PyCA cryptography is needed (.ci/run installs it)")
        let reference = try JSONValue.parse(answer)
        #expect(reference["key"]?.stringValue == Self.hex(keys.keyBytes))
        #expect(reference["iv"]?.stringValue == Self.hex(keys.ivBytes))
        #expect(reference["next_key"]?.stringValue == Self.hex(keys.next()!.keyBytes))
        #expect(reference["frames"] == .array(frames.map { .string(Self.hex($0)) }))
        #expect(reference["channel"]?["c2s"]?.stringValue == Self.hex(Array(channel.clientToServer.bytes)))
        #expect(reference["channel"]?["s2c"]?.stringValue == Self.hex(Array(channel.serverToClient.bytes)))
    }

    @Test func theDocumentPrintsTheseVectors() throws {
        let document = try String(
            contentsOf: VectorTests.directory.appendingPathComponent("../../../docs/PROTOCOL.md").standardizedFileURL, encoding: .utf8)
            .replacingOccurrences(of: "\n", with: "").replacingOccurrences(of: " ", with: "")
        let (keys, frames) = try sealed()
        let channel = try Self.channelSecrets()
        for value in [keys.keyBytes, keys.ivBytes, keys.next()!.keyBytes, Array(channel.clientToServer.bytes), Array(channel.serverToClient.bytes)]
            + frames
        {
            let printed = document.contains(Self.hex(value))
            #expect(printed, "docs/PROTOCOL.md §11 lacks \(Self.hex(value).prefix(32))…")
        }
    }
}

@Suite struct SessionRPCTests {
    @Test func everyMessageRoundTripsThroughAFrame() throws {
        var pair = SessionPair()
        let messages: [SessionRPC.Message] = [
            .call(id: 1, method: "goods.search", params: ["keyword": "phone"]), .reply(id: 1, result: ["goods": []]), .ack(id: 1),
            .status(id: 1), .statusReply(id: 1, status: .processed), .error(id: 2, code: "SCOPE_INSUFFICIENT", message: "no"),
        ]
        for message in messages {
            let opened = try pair.server.open(try pair.client.seal(message.kind, try message.payload(), now: pair.now)).get()
            #expect(try SessionRPC.Message(kind: opened.kind, payload: opened.payload) == message)
        }
    }

    @Test func payloadsThatDoNotFitTheirKindAreMalformed() {
        for (kind, text) in [
            (SessionFrame.Kind.call, #"{"id":1}"#), (.call, #"{"id":1,"method":"a b"}"#), (.call, #"{"id":-1,"method":"m"}"#),
            (.statusReply, #"{"id":1,"status":"maybe"}"#), (.error, #"{"id":1}"#), (.reply, "[1]"), (.ack, "not json"),
            (.keyUpdate, #"{"id":1}"#),
        ] {
            #expect(throws: ATHError.self) { try SessionRPC.Message(kind: kind, payload: Array(text.utf8)) }
        }
    }

    @Test func theLedgerRunsACallOnceAndAnswersRepeatsAndStatusQueries() {
        var ledger = SessionRPC.CallLedger(capacity: 3)
        #expect(ledger.status(of: 7) == .unknown)
        #expect(ledger.receive(callID: 7) == .run)
        #expect(ledger.status(of: 7) == .delivered)
        #expect(ledger.receive(callID: 7) == .repeatAnswer(.ack(id: 7)))  // a retransmission while it runs
        ledger.started(7)
        #expect(ledger.status(of: 7) == .pending)
        ledger.answered(.reply(id: 7, result: "done"))
        #expect(ledger.status(of: 7) == .processed)
        #expect(ledger.receive(callID: 7) == .repeatAnswer(.reply(id: 7, result: "done")))
        #expect(ledger.receive(callID: 8) == .run)
        ledger.answered(.error(id: 8, code: "RATE_LIMITED", message: "later"))
        #expect(ledger.status(of: 8) == .failed)
        // Beyond its capacity the ledger forgets the oldest, and refuses ids at or below it.
        #expect(ledger.receive(callID: 9) == .run)
        #expect(ledger.receive(callID: 10) == .run)
        #expect(ledger.status(of: 7) == .unknown)
        guard case .refuse = ledger.receive(callID: 7) else {
            Issue.record("a forgotten id must not run again")
            return
        }
    }
}

/// A deterministic fuzz pass run with the tests: mutated frames never open, never crash, and
/// every refusal is counted. (A libFuzzer target is still to come.)
@Suite struct SessionFrameMutationTests {
    /// xorshift64*, seeded: the same mutations on every run.
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state >> 12
            state ^= state << 25
            state ^= state >> 27
            return state &* 2_685_821_657_736_338_717
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
    }

    @Test func mutatedFramesAreAlwaysRefused() throws {
        var random = Random(state: 0x9E37_79B9_7F4A_7C15)
        var pair = SessionPair(ordering: .window(64))
        let originals = try (0..<32).map { i in try pair.client.seal(.call, Array(repeating: UInt8(i), count: i * 13), now: pair.now) }
        var attempts = 0
        for round in 0..<20_000 {
            var frame = originals[round % originals.count]
            switch random.below(5) {
            case 0: frame[random.below(frame.count)] ^= UInt8(1 << random.below(8))
            case 1: frame.removeLast(1 + random.below(frame.count - 1))
            case 2: frame.insert(UInt8(truncatingIfNeeded: random.next()), at: random.below(frame.count + 1))
            case 3: frame += (0..<(1 + random.below(128))).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            default: for _ in 0..<(1 + random.below(8)) { frame[random.below(frame.count)] = UInt8(truncatingIfNeeded: random.next()) }
            }
            if frame == originals[round % originals.count] { continue }
            attempts += 1
            if case .success(let opened) = pair.server.open(frame) {
                Issue.record("a mutated frame opened: sequence \(opened.sequence)")
            }
        }
        #expect(pair.server.refusals.values.reduce(0, +) == attempts)
        // The genuine frames are untouched by all of it.
        for (i, frame) in originals.enumerated() { #expect(try pair.server.open(frame).get().sequence == UInt64(i)) }
    }
}

@Suite struct SessionEndpointTests {
    static let secrets = SessionSecrets(
        sessionID: Base64URL.encode(Data(SessionPair.sessionID)), proofKey: SymmetricKey(size: .bits256),
        clientToServer: SessionPair.c2s, serverToClient: SessionPair.s2c)
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    func pair(_ ordering: SessionOpener.Ordering = .stream) throws -> (ClientSessionEndpoint, ServerSessionEndpoint) {
        (
            try ClientSessionEndpoint(secrets: Self.secrets, suite: .aes256gcm, ordering: ordering, now: now),
            try ServerSessionEndpoint(secrets: Self.secrets, suite: .aes256gcm, ordering: ordering, now: now)
        )
    }

    @Test func aCallIsAcknowledgedRunAndAnswered() throws {
        var (client, server) = try pair()
        let (id, frame) = try client.call("goods.search", ["keyword": "phone"], now: now)
        let effects = server.receive(frame, now: now)
        #expect(effects.count == 2)
        guard case .send(let ack) = effects[0], effects[1] == .invoke(id: id, method: "goods.search", params: ["keyword": "phone"]) else {
            Issue.record("expected an ack and an invoke, got \(effects)")
            return
        }
        #expect(client.receive(ack) == .acked(id))
        server.started(id)
        guard case .send(let query) = server.receive(try client.statusQuery(id, now: now), now: now).first else { return }
        #expect(client.receive(query) == .status(id, .pending))
        #expect(client.receive(try server.answer(id, .success(["goods": []]), now: now)) == .replied(id, ["goods": []]))
        #expect(client.unanswered.isEmpty)
        let (failing, callFrame) = try client.call("user.profile", nil, now: now)
        guard case .send(let secondAck) = server.receive(callFrame, now: now).first else { return }
        #expect(client.receive(secondAck) == .acked(failing))  // a stream skips nothing
        let refusal = try server.answer(failing, .failure(ATHError(.scopeInsufficient, "needs user:profile")), now: now)
        #expect(client.receive(refusal) == .failed(failing, code: "SCOPE_INSUFFICIENT", message: "needs user:profile"))
    }

    /// Datagrams: the reply is lost, the client seals the call again, the server answers from
    /// its ledger without running the handler a second time.
    @Test func aRetransmittedCallIsAnsweredWithoutRunningTwice() throws {
        var (client, server) = try pair(.window(64))
        let (id, frame) = try client.call("order.create", ["goods_id": "123"], now: now)
        #expect(server.receive(frame, now: now).contains(.invoke(id: id, method: "order.create", params: ["goods_id": "123"])))
        _ = try server.answer(id, .success(["order_id": "o-1"]), now: now)  // lost on the way
        #expect(try client.retransmissions(now: now.addingTimeInterval(0.5), timeout: 1).frames.isEmpty)
        let again = try client.retransmissions(now: now.addingTimeInterval(1), timeout: 1)
        #expect(again.frames.count == 1)
        let effects = server.receive(again.frames[0], now: now)
        #expect(!effects.contains { if case .invoke = $0 { true } else { false } })
        guard case .send(let reply) = effects.first else { return }
        #expect(client.receive(reply) == .replied(id, ["order_id": "o-1"]))
        // A call nobody answers is given up after its attempts.
        let (lost, _) = try client.call("order.create", nil, now: now)
        var gaveUp: [UInt64] = []
        for second in 1...6 { gaveUp += try client.retransmissions(now: now.addingTimeInterval(Double(second)), timeout: 1, maxAttempts: 3).gaveUp }
        #expect(gaveUp == [lost])
    }

    @Test func answersFromTheClientAndCallsFromTheServerAreDropped() throws {
        var (client, server) = try pair()
        var forgedSealer = SessionSealer(
            keys: SessionTrafficKeys(secret: SessionPair.c2s, suite: .aes256gcm), direction: .clientToServer,
            sessionID: SessionPair.sessionID, now: now)
        let reply = try forgedSealer.seal(.reply, try SessionRPC.Message.reply(id: 1, result: 1).payload(), now: now)
        #expect(server.receive(reply, now: now) == [.dropped(.malformed)])
        var serverSealer = SessionSealer(
            keys: SessionTrafficKeys(secret: SessionPair.s2c, suite: .aes256gcm), direction: .serverToClient,
            sessionID: SessionPair.sessionID, now: now)
        let call = try serverSealer.seal(.call, try SessionRPC.Message.call(id: 1, method: "m", params: nil).payload(), now: now)
        #expect(client.receive(call) == .dropped(.malformed))
    }

    @Test func aServerCloseEndsTheSessionForTheClient() throws {
        var (client, server) = try pair()
        let (_, frame) = try client.call("goods.search", nil, now: now)
        let closing = server.close(now: now)
        let bye = try #require(closing)
        #expect(client.receive(bye) == .closed)
        #expect(server.receive(frame, now: now) == [.dropped(.closed)])
    }
}

@Suite struct SessionChannelTests {
    static let session = SessionSecrets(
        sessionID: Base64URL.encode(Data(SessionPair.sessionID)), proofKey: SymmetricKey(size: .bits256), clientToServer: SessionPair.c2s,
        serverToClient: SessionPair.s2c)

    static func channel(_ id: UInt8, clientNonce: UInt8 = 1, serverNonce: UInt8 = 2) throws -> SessionSecrets {
        try SessionChannel.secrets(
            of: session, channelID: [UInt8](repeating: id, count: 16), clientNonce: [UInt8](repeating: clientNonce, count: 32),
            serverNonce: [UInt8](repeating: serverNonce, count: 32))
    }

    /// Each attachment has keys of its own: a frame of one channel opens on no other, even one
    /// of the same session with the same id, so sequence numbers restarting per channel never
    /// repeat a nonce under a key, and nothing of an old connection replays into a new one.
    @Test func aFrameOfOneChannelOpensOnNoOther() throws {
        let a = try Self.channel(1)
        var client = try ClientSessionEndpoint(secrets: a, suite: .aes256gcm, ordering: .stream, now: Date())
        let (_, frame) = try client.call("goods.search", [:], now: Date())

        var same = try ServerSessionEndpoint(secrets: a, suite: .aes256gcm, ordering: .stream, now: Date())
        #expect(same.receive(frame, now: Date()).contains(.invoke(id: 1, method: "goods.search", params: [:])))
        var otherID = try ServerSessionEndpoint(secrets: try Self.channel(2), suite: .aes256gcm, ordering: .stream, now: Date())
        #expect(otherID.receive(frame, now: Date()) == [.dropped(.foreignSession)])
        // Same channel id, other nonces (a second attach): the tag fails.
        for other in [try Self.channel(1, clientNonce: 9), try Self.channel(1, serverNonce: 9)] {
            var endpoint = try ServerSessionEndpoint(secrets: other, suite: .aes256gcm, ordering: .stream, now: Date())
            #expect(endpoint.receive(frame, now: Date()) == [.dropped(.tampered)])
        }
        #expect(a.clientToServer != Self.session.clientToServer && a.serverToClient != a.clientToServer)
        #expect(a.sessionID == Base64URL.encode(Data(repeating: 1, count: 16)))
    }

    @Test func badChannelInputsAreRefused() {
        #expect(throws: ATHError.self) {
            _ = try SessionChannel.secrets(of: Self.session, channelID: [1, 2], clientNonce: Array(repeating: 0, count: 32), serverNonce: Array(repeating: 0, count: 32))
        }
        #expect(throws: ATHError.self) {
            _ = try SessionChannel.secrets(
                of: Self.session, channelID: Array(repeating: 0, count: 16), clientNonce: Array(repeating: 0, count: 31), serverNonce: Array(repeating: 0, count: 32))
        }
        #expect(throws: ATHError.self) { _ = try SessionChannel.bytes("not base64!", count: 32, field: "client_nonce") }
    }

    /// TCP delivers bytes, not frames: frames are cut at their length prefixes whatever the
    /// chunking, and an impossible length stops the stream before anything is buffered for it.
    @Test func theFrameStreamCutsAtLengthPrefixes() throws {
        let frames: [[UInt8]] = [Array(repeating: 1, count: 108), Array(repeating: 2, count: 172), []]
        let bytes = frames.flatMap(SessionFrameStream.encode)
        for chunk in [1, 3, 7, 64, bytes.count] {
            var stream = SessionFrameStream()
            var out: [[UInt8]] = []
            var offset = 0
            while offset < bytes.count {
                out += try stream.append(bytes[offset..<min(offset + chunk, bytes.count)])
                offset += chunk
            }
            #expect(out == frames, "chunks of \(chunk)")
            #expect(stream.pending == 0)
        }
        var stream = SessionFrameStream()
        #expect(throws: SessionFrameStream.Failure.oversized(Int(UInt32.max))) { _ = try stream.append([0xff, 0xff, 0xff, 0xff, 0]) }
        #expect(try SessionFrameStream.decode(bytes, maxFrames: 3) == frames)
        #expect(throws: ATHError.self) { _ = try SessionFrameStream.decode(bytes, maxFrames: 2) }
        #expect(throws: ATHError.self) { _ = try SessionFrameStream.decode(Array(bytes.dropLast()), maxFrames: 3) }
    }
}
