import ATHAgent
import ATHCore
import ATHServer
import ATHStore
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import ShoppingExample
import Testing

/// Hostile input over the wire: each answer is the documented error, nothing is written that
/// should not be, and the server keeps serving.
@Suite struct HardeningTests {
    struct Reply {
        var status: Int
        var json: JSONValue?
        var headers = HTTPHeaders()
        var code: String? { json?["code"]?.stringValue }
        /// Step 2's handshake ticket, as step 3 brings it back.
        var ticket: [(String, String)] { headers.first(name: HandshakeTicket.header).map { [(HandshakeTicket.header, $0)] } ?? [] }
    }

    static func send(
        _ base: String, _ method: HTTPMethod, _ path: String, body: [UInt8]? = nil, contentType: String? = "application/json",
        headers: [(String, String)] = []
    ) async throws -> Reply {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            if let contentType { request.headers.add(name: "content-type", value: contentType) }
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let bytes = try await response.body.collect(upTo: 1 << 20)
        return Reply(status: Int(response.status.code), json: try? JSONValue.parse(bytes.readableBytesView), headers: response.headers)
    }

    static func post(_ base: String, _ path: String, _ value: JSONValue, headers: [(String, String)] = []) async throws -> Reply {
        try await send(base, .POST, path, body: try CanonicalJSON.bytes(value), headers: headers)
    }

    /// The step 1 that used to end the process (abs(now - Int64.min) traps): refused, and the
    /// same server completes a handshake right after.
    @Test func stepOneAtTheEdgesOfTheTimestamp() async throws {
        let h = try await Harness.start()
        try await h.registerParties()
        var client = ClientHandshake(did: h.agent, key: h.agentKey)
        let m1 = String(decoding: try CanonicalJSON.bytes(try client.makeRequest(now: Date())), as: UTF8.self)
        let stamp = try #require(m1.range(of: #""timestamp":\d+"#, options: .regularExpression))
        for edge in ["-9223372036854775808", "9223372036854775807", "-9007199254740991", "1e300"] {
            let text = m1.replacingCharacters(in: stamp, with: #""timestamp":\#(edge)"#)
            let reply = try await Self.send(h.server.baseURL, .POST, "/ath/handshake", body: Array(text.utf8))
            #expect(
                (reply.status == 400 && reply.code == "MALFORMED_MESSAGE") || (reply.status == 401 && reply.code == "TIMESTAMP_OUT_OF_RANGE"),
                "\(edge): \(reply.status) \(reply.code ?? "-")")
        }
        let session = try await h.handshake(scopes: ["goods:read"])
        #expect(try await session.get("/api/goods").status == 200)
        await h.stop()
    }

    @Test func longPollWaitMustBeANumber() async throws {
        let h = try await Harness.start()
        for wait in ["nan", "inf", "-1", "x"] {
            let reply = try await Self.send(h.server.baseURL, .GET, "/ath/handshake/some-id/result?wait=\(wait)")
            #expect(reply.status == 400 && reply.code == "MALFORMED_MESSAGE", "wait=\(wait)")
        }
        #expect(try await Self.send(h.server.baseURL, .GET, "/ath/handshake/some-id/result?wait=0").code == "HANDSHAKE_NOT_FOUND")
        await h.stop()
    }

    @Test func jsonBodiesNeedTheirMediaType() async throws {
        let h = try await Harness.start()
        var client = ClientHandshake(did: h.agent, key: h.agentKey)
        let m1 = try CanonicalJSON.bytes(try client.makeRequest(now: Date()))
        for type in [nil, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"] as [String?] {
            let reply = try await Self.send(h.server.baseURL, .POST, "/ath/handshake", body: m1, contentType: type)
            #expect(reply.status == 415 && reply.code == "UNSUPPORTED_MEDIA_TYPE", "\(type ?? "none")")
        }
        let frames = try await Self.send(h.server.baseURL, .POST, "/ath/session/frames", body: [0, 0, 0, 0], contentType: "application/json")
        #expect(frames.status == 415 && frames.code == "UNSUPPORTED_MEDIA_TYPE")
        // Parameters and case do not matter; the message was not consumed by the refusals.
        let ok = try await Self.send(h.server.baseURL, .POST, "/ath/handshake", body: m1, contentType: "Application/JSON; charset=utf-8")
        #expect(ok.status == 200)
        await h.stop()
    }

    /// Each route takes the body it needs: a step 1 padded past 4 KiB with an extra member (which
    /// would travel in its ticket and the transcript) is refused, and so is a shorter one whose
    /// canonical form (numbers written out) would make a ticket too long for a header field;
    /// step 3 may carry a certificate chain.
    @Test func stepOneIsSmall() async throws {
        let h = try await Harness.start()
        var client = ClientHandshake(did: h.agent, key: h.agentKey)
        guard case .object(var members) = try client.makeRequest(now: Date()) else { Issue.record("step 1 is an object"); return }
        members["padding"] = .string(String(repeating: "x", count: 5 * 1024))
        var reply = try await Self.post(h.server.baseURL, "/ath/handshake", .object(members))
        #expect(reply.status == 413 && reply.code == "PAYLOAD_TOO_LARGE")
        members["padding"] = .string(String(repeating: "x", count: 3 * 1024))
        reply = try await Self.post(h.server.baseURL, "/ath/handshake", .object(members))
        #expect(reply.status == 200 && !reply.ticket.isEmpty)
        members["padding"] = nil
        let m1 = try CanonicalJSON.bytes(.object(members))
        let numbers = Array(#","padding":["#.utf8) + Array(repeating: Array("1e20,".utf8), count: 600).joined() + Array("1]}".utf8)
        let swollen = Array(m1.dropLast()) + numbers
        #expect(swollen.count < 4 * 1024)
        reply = try await Self.send(h.server.baseURL, .POST, "/ath/handshake", body: swollen)
        #expect(reply.status == 413 && reply.code == "PAYLOAD_TOO_LARGE", "\(reply.status) \(reply.code ?? "-")")
        await h.stop()
    }

    /// Step 1 writes nothing; a step 3 refused with a genuine ticket ends its handshake as any
    /// later refusal does: it is stored ended, with its audit record, and the genuine step 3
    /// brought with the same ticket afterwards gets the same error.
    @Test func aRefusedStepThreeEndsItsHandshake() async throws {
        let h = try await Harness.start()
        try await h.registerParties()
        var client = ClientHandshake(did: h.agent, key: h.agentKey, expectedServer: ShoppingPlatform.did)
        let auditBefore = try await h.store.auditRecords(after: 0, limit: 1_000).count
        let step2 = try await Self.post(h.server.baseURL, "/ath/handshake", try client.makeRequest(now: Date()))
        let id = try #require(step2.json?["handshake_id"]?.stringValue)
        #expect(try await h.store.handshake(id: id) == nil)
        #expect(try await h.store.auditRecords(after: 0, limit: 1_000).count == auditBefore)
        let m3 = try client.receiveResponse(try #require(step2.json), now: Date())
        guard case .object(var forged) = m3, let signature = forged["signature"]?.stringValue else { Issue.record("step 3 is signed"); return }
        forged["signature"] = .string(String(signature.reversed()))
        let refused = try await Self.post(h.server.baseURL, "/ath/handshake/\(id)/identity", .object(forged), headers: step2.ticket)
        #expect(refused.status == 401 && refused.code == "INVALID_SIGNATURE")
        #expect(try await h.store.handshake(id: id)?.handshake.state == .failed)
        let records = try await h.store.auditRecords(after: 0, limit: 1_000).map(\.event)
        #expect(records.last?.event == "handshake.identity" && records.last?.outcome == "INVALID_SIGNATURE")
        let genuine = try await Self.post(h.server.baseURL, "/ath/handshake/\(id)/identity", m3, headers: step2.ticket)
        #expect(genuine.status == 401 && genuine.code == "INVALID_SIGNATURE")
        await h.stop()
    }

    /// A ticket lasts as long as its handshake: brought back after the handshake timeout (here to
    /// a second instance on the same store whose clock is past it), it is refused with
    /// HANDSHAKE_EXPIRED and nothing is stored; before that, the same ticket is taken.
    @Test func aTicketPastItsHandshakesDeadlineWritesNothing() async throws {
        let key = PrivateKey.generate()
        let h = try await Harness.start(serverKey: key)
        try await h.registerParties()
        var client = ClientHandshake(did: h.agent, key: h.agentKey, expectedServer: ShoppingPlatform.did)
        let start = try await h.service.begin(try client.makeRequest(now: Date()))
        let id = try #require(start.response["handshake_id"]?.stringValue)
        let m3 = try client.receiveResponse(start.response, now: Date())
        let later = Date().addingTimeInterval(Double(ShoppingPlatform.policy.handshakeTimeout + 5))
        let other = try await ATHService(
            identity: ServerIdentity(did: ShoppingPlatform.did, keys: [key]), policy: ShoppingPlatform.policy, store: h.store,
            clock: { later })
        await #expect { try await other.identityProof(handshakeID: id, ticket: start.ticket, m3) } throws: {
            ATHError.code($0) == .handshakeExpired
        }
        #expect(try await h.store.handshake(id: id) == nil)
        // Within the timeout the same ticket is taken.
        let m4 = try await h.service.identityProof(handshakeID: id, ticket: start.ticket, m3)
        #expect(m4["success"] == true)
        await h.stop()
    }

    /// An answer to a confirmation request that does not exist: 404, nothing written.
    @Test func anAnswerToNoRequest() async throws {
        let h = try await Harness.start()
        let reply = try await Self.post(h.server.baseURL, "/ath/confirmations/no-such-request", ["type": "authorization_confirmation_response"])
        #expect(reply.status == 404 && reply.code == "CONFIRMATION_NOT_FOUND")
        #expect(try await h.store.auditRecords(after: 0, limit: 10).isEmpty)
        await h.stop()
    }

    /// Steps 1-4 by hand; returns the client (ready for step 5) and the handshake id.
    static func identified(_ h: Harness) async throws -> (ClientHandshake, String) {
        var client = ClientHandshake(did: h.agent, key: h.agentKey, expectedServer: ShoppingPlatform.did)
        let step2 = try await post(h.server.baseURL, "/ath/handshake", try client.makeRequest(now: Date()))
        let m2 = try #require(step2.json)
        let id = try #require(m2["handshake_id"]?.stringValue)
        let m3 = try client.receiveResponse(m2, now: Date())
        let m4 = try #require(try await post(h.server.baseURL, "/ath/handshake/\(id)/identity", m3, headers: step2.ticket).json)
        _ = try client.receiveIdentityResult(m4, now: Date())
        return (client, id)
    }

    /// Steps 1-5 by hand, the user not yet answering; returns the client (waiting for the
    /// outcome) and the handshake id.
    static func awaitingConfirmation(_ h: Harness) async throws -> (ClientHandshake, String) {
        var (client, id) = try await identified(h)
        let m5 = try client.makeScopeRequest(scopes: ["goods:read"], ttl: 600, credential: try await h.credential(), context: "x", now: Date())
        let reply = try await post(h.server.baseURL, "/ath/handshake/\(id)/scope", m5)
        guard reply.status == 202 else { throw ATHError(.internalError, "step 5 answered \(reply.status) \(reply.code ?? "-")") }
        return (client, id)
    }

    /// A credential refused at step 5 ends the handshake, with its audit record, like any other
    /// refusal after step 1; a later step 5 on it changes nothing and writes nothing of its own.
    @Test func refusedCredentialEndsTheHandshake() async throws {
        let h = try await Harness.start()
        try await h.registerParties()
        var (client, id) = try await Self.identified(h)
        let ready = client
        let bad = try client.makeScopeRequest(scopes: ["goods:read"], ttl: 600, credential: "not.a.credential", context: "x", now: Date())
        let refused = try await Self.post(h.server.baseURL, "/ath/handshake/\(id)/scope", bad)
        #expect(refused.status == 401 && refused.code == "INVALID_USER_CREDENTIAL")
        let ended = try #require(try await h.store.handshake(id: id))
        #expect(ended.handshake.state == .failed && ended.handshake.failure?.code == "INVALID_USER_CREDENTIAL")
        let audit = try await h.store.auditRecords(after: 0, limit: 1_000)
        #expect(audit.contains { $0.event.subject == id && $0.event.event == "handshake.scope_request" && $0.event.outcome == "INVALID_USER_CREDENTIAL" })

        // The same agent tries again with a good credential on the ended handshake.
        var retry = ready
        let good = try retry.makeScopeRequest(scopes: ["goods:read"], ttl: 600, credential: try await h.credential(), context: "x", now: Date())
        let again = try await Self.post(h.server.baseURL, "/ath/handshake/\(id)/scope", good)
        #expect(again.status == 401 && again.code == "INVALID_USER_CREDENTIAL")
        let after = try #require(try await h.store.handshake(id: id))
        #expect(after.revision == ended.revision)
        // The repeated post is only a queued refusal, written in a later batch.
        await h.service.refusals.flush()
        let flushed = try await h.store.auditRecords(after: 0, limit: 1_000)
        #expect(flushed.count == audit.count + 1 && flushed.last?.event.detail == "the handshake had already ended")
        await h.stop()
    }

    /// Renewal is a check-and-set: two renewals of one token, sent together, give one new token.
    @Test func concurrentRenewalsOfOneToken() async throws {
        let h = try await Harness.start()
        try await h.registerParties()
        let session = try await h.handshake(scopes: ["goods:read"])
        let headers = [await session.authHeaders("POST", "/ath/token/renew", Data()), await session.authHeaders("POST", "/ath/token/renew", Data())]
        let replies = try await withThrowingTaskGroup(of: Reply.self) { group in
            for header in headers {
                group.addTask { try await Self.send(h.server.baseURL, .POST, "/ath/token/renew", headers: header) }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(replies.filter { $0.status == 200 }.count == 1)
        #expect(replies.filter { $0.status == 401 && $0.code == "TOKEN_REVOKED" }.count == 1)
        let renewals = try await h.store.auditRecords(after: 0, limit: 1_000).filter { $0.event.event == "token.renew" }
        #expect(renewals.count == 1)
        await h.stop()
    }

    /// Calls that renew while a renewal is under way join it: without that, each would present
    /// the old token, which the first renewal revoked, and fail with TOKEN_REVOKED.
    @Test func theAgentRenewsOnce() async throws {
        let h = try await Harness.start()
        try await h.registerParties()
        let session = try await h.handshake(scopes: ["goods:read"])
        let before = await session.grant.accessToken
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<6 { group.addTask { try await session.renew() } }
            try await group.waitForAll()
        }
        #expect(await session.grant.accessToken != before)
        #expect(try await session.get("/api/goods").status == 200)
        await h.stop()
    }
}
