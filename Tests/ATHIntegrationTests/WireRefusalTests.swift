import ATHAgent
import ATHCore
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import ShoppingExample
import Testing

/// Refusals seen on the wire: each answers with the documented status and `{code, message}`.
@Suite struct WireRefusalTests {
    func send(_ base: String, _ method: HTTPMethod, _ path: String, body: Data? = nil, headers: [(String, String)] = []) async throws -> (Int, ATHErrorBody?) {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        for (n, v) in headers { request.headers.add(name: n, value: v) }
        if let body {
            if !headers.contains(where: { $0.0.lowercased() == "content-type" }) { request.headers.add(name: "content-type", value: "application/json") }
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let bytes = try await response.body.collect(upTo: 1 << 20)
        return (Int(response.status.code), try? JSONDecoder().decode(ATHErrorBody.self, from: Data(bytes.readableBytesView)))
    }

    @Test func tokenAndProofRefusals() async throws {
        let h = try await Harness.start()
        try await h.registerParties()
        let session = try await h.handshake()
        let other = try await h.handshake()
        let base = h.server.baseURL
        let good = await session.authHeaders("GET", "/api/goods", Data())
        let token = good[0].1

        var (status, body) = try await send(base, .GET, "/api/goods")
        #expect(status == 401 && body?.code == "TOKEN_MISSING")
        // RFC 7235: a 401 names its scheme; the body is the documented shape with sorted keys.
        let raw = try await HTTPClient.shared.execute(HTTPClientRequest(url: base + "/api/goods"), timeout: .seconds(10))
        #expect(raw.headers.first(name: "www-authenticate") == #"ATH realm="ath", error="TOKEN_MISSING""#)
        #expect(raw.headers.first(name: "content-type") == "application/json")
        let text = String(buffer: try await raw.body.collect(upTo: 1 << 16))
        #expect(text.hasPrefix(#"{"code":"TOKEN_MISSING","message":"#) && text.hasSuffix(#","retryable":false}"#))
        (status, body) = try await send(base, .GET, "/api/goods", headers: [("authorization", token)])
        #expect(status == 401 && body?.code == "PROOF_MISSING")
        (status, body) = try await send(base, .GET, "/api/goods", headers: good)
        #expect(status == 200)
        (status, body) = try await send(base, .GET, "/api/goods", headers: good)
        #expect(status == 401 && body?.code == "PROOF_REPLAYED")
        // The token with a proof made by another session's key: a stolen token alone is useless.
        let foreignProof = await other.authHeaders("GET", "/api/goods", Data())[1]
        (status, body) = try await send(base, .GET, "/api/goods", headers: [("authorization", token), foreignProof])
        #expect(status == 401 && body?.code == "PROOF_INVALID")
        // A proof for another request target.
        let wrongTarget = await session.authHeaders("GET", "/api/goods?keyword=x", Data())
        (status, body) = try await send(base, .GET, "/api/goods", headers: wrongTarget)
        #expect(status == 401 && body?.code == "PROOF_INVALID")
        // A tampered token (one claim changed, signature kept).
        let parts = token.dropFirst("Bearer ".count).split(separator: ".")
        var claims = try JSONValue.parse(Base64URL.decode(String(parts[1]))!)
        if case .object(var o) = claims { o["scope"] = "goods:read order:create user:profile"; claims = .object(o) }
        let forged = "Bearer \(parts[0]).\(Base64URL.encode(try JSONEncoder().encode(claims))).\(parts[2])"
        (status, body) = try await send(base, .GET, "/api/profile", headers: [("authorization", forged), good[1]])
        #expect(status == 401 && body?.code == "TOKEN_INVALID")
        // The same length and the same signature as the token in use, so the same place in the
        // server's cache of verified tokens: only the whole value counts, and this one's
        // signature does not verify (a cache hit would have admitted it with a valid proof).
        var bytes = Array(token.utf8)
        let changed = "Bearer ".count + parts[0].count + 5
        bytes[changed] = bytes[changed] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        let sameTail = String(decoding: bytes, as: UTF8.self)
        let proofForToken = await session.authHeaders("GET", "/api/goods", Data())[1]
        (status, body) = try await send(base, .GET, "/api/goods", headers: [("authorization", sameTail), proofForToken])
        #expect(status == 401 && body?.code == "TOKEN_INVALID")
        // A second Authorization or ATH-Proof field is refused, not joined or ignored, even
        // when the first one is valid; the proof is not spent by it.
        let fresh = await session.authHeaders("GET", "/api/goods", Data())
        (status, body) = try await send(base, .GET, "/api/goods", headers: fresh + [("authorization", "Bearer x")])
        #expect(status == 401 && body?.code == "TOKEN_INVALID" && body?.message == "more than one Authorization header")
        (status, body) = try await send(base, .GET, "/api/goods", headers: fresh + [foreignProof])
        #expect(status == 401 && body?.code == "PROOF_INVALID" && body?.message == "more than one ATH-Proof header")
        (status, body) = try await send(base, .GET, "/api/goods", headers: fresh)
        #expect(status == 200)
        await h.stop()
    }

    @Test func malformedAndOversizedMessages() async throws {
        let h = try await Harness.start()
        let base = h.server.baseURL
        var (status, body) = try await send(base, .POST, "/ath/handshake", body: Data("{not json".utf8))
        #expect(status == 400 && body?.code == "MALFORMED_MESSAGE")
        (status, body) = try await send(base, .POST, "/ath/handshake", body: Data(#"{"type":"handshake_request"}"#.utf8))
        #expect(status == 400 && body?.code == "MALFORMED_MESSAGE")
        // A valid step 1 with one member repeated: refused before anything is stored.
        var client = ClientHandshake(did: h.agent, key: h.agentKey)
        let m1 = String(decoding: try JSONEncoder().encode(try client.makeRequest(now: Date())), as: UTF8.self)
        let duplicated = m1.replacingOccurrences(of: #"{"#, with: #"{"versions":["0.0"],"#, options: [], range: m1.range(of: "{"))
        (status, body) = try await send(base, .POST, "/ath/handshake", body: Data(duplicated.utf8))
        #expect(status == 400 && body?.code == "MALFORMED_MESSAGE" && body?.message.contains("duplicate member 'versions'") == true)
        // Its nonce was not consumed: the same message without the duplicate is accepted.
        (status, body) = try await send(base, .POST, "/ath/handshake", body: Data(m1.utf8))
        #expect(status == 200)
        (status, body) = try await send(base, .POST, "/ath/handshake", body: Data(repeating: 0x20, count: 200_000))
        #expect(status == 413 && body?.code == "PAYLOAD_TOO_LARGE")
        (status, body) = try await send(base, .POST, "/ath/handshake/nope/identity", body: Data("{}".utf8))
        #expect(status == 404 && body?.code == "HANDSHAKE_NOT_FOUND")
        (status, body) = try await send(base, .GET, "/no/such/endpoint")
        #expect(status == 404 && body?.code == "NOT_FOUND")
        await h.stop()
    }

    /// A step 1 sent twice is answered twice (step 1 stores nothing), but only one of the two
    /// handshakes passes step 3: the other finds the step-1 nonce used (NONCE_REPLAYED) and is
    /// not stored. The first's step 3 sent again, ticket and all, is out of order.
    @Test func replayedHandshakeRequestIsRefused() async throws {
        let h = try await Harness.start()
        try await h.registerParties()
        let base = h.server.baseURL
        var client = ClientHandshake(did: h.agent, key: h.agentKey, expectedServer: ShoppingPlatform.did)
        let m1 = try client.makeRequest(now: Date())
        var replayer = client
        let first = try await HardeningTests.post(base, "/ath/handshake", m1)
        let second = try await HardeningTests.post(base, "/ath/handshake", m1)
        #expect(first.status == 200 && second.status == 200)
        let firstID = try #require(first.json?["handshake_id"]?.stringValue)
        let secondID = try #require(second.json?["handshake_id"]?.stringValue)
        #expect(firstID != secondID)
        let m3 = try client.receiveResponse(try #require(first.json), now: Date())
        let replayedM3 = try replayer.receiveResponse(try #require(second.json), now: Date())
        #expect(try await HardeningTests.post(base, "/ath/handshake/\(firstID)/identity", m3, headers: first.ticket).status == 200)
        let replayed = try await HardeningTests.post(base, "/ath/handshake/\(secondID)/identity", replayedM3, headers: second.ticket)
        #expect(replayed.status == 401 && replayed.code == "NONCE_REPLAYED", "\(replayed.status) \(replayed.code ?? "-")")
        #expect(try await h.store.handshake(id: secondID) == nil)
        let again = try await HardeningTests.post(base, "/ath/handshake/\(firstID)/identity", m3, headers: first.ticket)
        #expect(again.status == 409 && again.code == "UNEXPECTED_MESSAGE")
        // A ticket is for its own handshake only.
        let swapped = try await HardeningTests.post(base, "/ath/handshake/\(secondID)/identity", replayedM3, headers: first.ticket)
        #expect(swapped.status == 404 && swapped.code == "HANDSHAKE_NOT_FOUND")
        await h.stop()
    }

    @Test func wrongRegisteredKeyIsRefused() async throws {
        let h = try await Harness.start()
        try await h.registerParties()
        let impostor = ATHClient(baseURL: h.server.baseURL, did: h.agent, key: PrivateKey.generate())
        await #expect {
            try await impostor.handshake(credential: try await h.credential(), scopes: ["goods:read"], ttl: 60, context: "x")
        } throws: { ATHError.code($0) == .keyMismatch }
        await h.stop()
    }
}
