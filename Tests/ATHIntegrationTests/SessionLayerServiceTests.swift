import ATHAgent
import ATHCore
import ATHServer
import ATHStore
import Foundation
import Synchronization
import Testing

/// Both ends of the encrypted session of a real handshake for `scopes`, and the access behind it.
struct OpenedSession {
    var claims: AccessTokenClaims
    var access: VerifiedAccess
    var server: ServerSessionEndpoint
    var client: ClientSessionEndpoint

    init(_ h: Harness, scopes: [String]) async throws {
        let grant = await (try await h.handshake(scopes: scopes)).grant
        claims = try JWTCodec.unverifiedClaims(of: grant.accessToken, as: AccessTokenClaims.self, error: .tokenInvalid)
        access = VerifiedAccess(claims: claims, grant: try #require(try await h.store.grant(id: claims.gid)))
        // One channel's keys, derived by each side from its own copy of the session's secrets.
        let (id, clientNonce, serverNonce) = ([UInt8](repeating: 1, count: 16), [UInt8](repeating: 2, count: 32), [UInt8](repeating: 3, count: 32))
        let serverSide = try SessionChannel.secrets(
            of: try await h.service.sessionSecrets(for: access), channelID: id, clientNonce: clientNonce, serverNonce: serverNonce)
        let agentSide = try SessionChannel.secrets(of: grant.secrets, channelID: id, clientNonce: clientNonce, serverNonce: serverNonce)
        server = try ServerSessionEndpoint(secrets: serverSide, suite: .aes256gcm, ordering: .stream, now: Date())
        client = try ClientSessionEndpoint(secrets: agentSide, suite: .aes256gcm, ordering: .stream, now: Date())
    }
}

/// The server keeps each session's traffic secrets (sealed with its proof key): after a real
/// handshake, the agent's end and the server's end of the encrypted session talk.
@Suite struct SessionLayerServiceTests {
    @Test func theAgentAndTheServerShareTheSessionKeysOfTheirHandshake() async throws {
        let h = try await Harness.start()
        defer { Task { await h.stop() } }
        try await h.registerParties()
        var session = try await OpenedSession(h, scopes: ["goods:read"])
        let (id, call) = try session.client.call("goods.search", ["keyword": "phone"], now: Date())
        let effects = session.server.receive(call, now: Date())
        #expect(effects.contains(.invoke(id: id, method: "goods.search", params: ["keyword": "phone"])))
        guard case .send(let ack) = effects.first else { return }
        #expect(session.client.receive(ack) == .acked(id))
        #expect(session.client.receive(try session.server.answer(id, .success(["goods": []]), now: Date())) == .replied(id, ["goods": []]))

        // The record is sealed under the server key: another session's id does not open it.
        var other = session.claims
        other.sid = Base64URL.encode(Data(repeating: 7, count: 16))
        await #expect(throws: ATHError.self) {
            _ = try await h.service.sessionSecrets(for: VerifiedAccess(claims: other, grant: session.access.grant))
        }
    }
}

@Suite struct SessionRPCRoutesTests {
    /// Calls over the session pass the same checks as HTTP requests: scope per method, and a
    /// revoked grant stops the next call and ends the session.
    @Test func callsNeedTheirScopeAndARevocationEndsTheSession() async throws {
        let h = try await Harness.start()
        defer { Task { await h.stop() } }
        try await h.registerParties()
        let session = try await OpenedSession(h, scopes: ["goods:read"])
        var (server, client, access) = (session.server, session.client, session.access)
        var routes = SessionRPCRoutes()
        routes.register("goods.search", scope: "goods:read") { params, access in
            ["keyword": params["keyword"] ?? .null, "user": .string(access.claims.sub)]
        }
        routes.register("user.profile", scope: "user:profile") { _, _ in ["name": "Alice"] }

        /// One call through both ends and the routes; returns what the client saw last.
        func roundTrip(_ method: String, _ params: JSONValue) async throws -> ClientSessionEndpoint.Event {
            let (_, frame) = try client.call(method, params, now: Date())
            var last: ClientSessionEndpoint.Event = .dropped(.malformed)
            for effect in server.receive(frame, now: Date()) {
                switch effect {
                case .send(let bytes): last = client.receive(bytes)
                case .invoke(let id, let method, let params):
                    let result = await routes.run(method: method, params: params, access: access, service: h.service, remoteAddress: "127.0.0.1")
                    last = client.receive(try server.answer(id, result, now: Date()))
                    if case .failure(let error) = result, SessionRPCRoutes.endsSession(error), let bye = server.close(now: Date()) {
                        #expect(client.receive(bye) == .closed)
                    }
                default: break
                }
            }
            return last
        }

        #expect(try await roundTrip("goods.search", ["keyword": "phone"]) == .replied(1, ["keyword": "phone", "user": .string(h.user.value)]))
        guard case .failed(2, "SCOPE_INSUFFICIENT", _) = try await roundTrip("user.profile", nil) else {
            Issue.record("a method outside the grant's scopes must be refused")
            return
        }
        guard case .failed(3, "MALFORMED_MESSAGE", _) = try await roundTrip("no.such.method", nil) else {
            Issue.record("an unknown method must be refused")
            return
        }
        try await h.service.revokeGrant(session.claims.gid, by: "test")
        guard case .failed(4, "TOKEN_REVOKED", _) = try await roundTrip("goods.search", nil) else {
            Issue.record("a call after revocation must be refused")
            return
        }
        // The session is over on both ends.
        let (_, late) = try client.call("goods.search", nil, now: Date())
        #expect(server.receive(late, now: Date()) == [.dropped(.closed)])
    }
}

/// The registry in process, with outlets that record what they were given: where a channel's
/// answers go is decided by authentic frames only.
@Suite struct SessionChannelsRoutingTests {
    final class Recorder: Sendable {
        let frames = Mutex<[String: Int]>([:])
        func outlet(_ name: String) -> SessionOutlet {
            SessionOutlet(id: name) { _ in self.frames.withLock { $0[name, default: 0] += 1 } }
        }
        func count(_ name: String) -> Int { frames.withLock { $0[name] ?? 0 } }
    }

    /// UDP: the agent may move to another address (a NAT rebinding); the server answers the
    /// address of the last authentic datagram, and a forged datagram from elsewhere moves nothing.
    @Test func answersFollowTheLastAuthenticAddress() async throws {
        let h = try await Harness.start()
        defer { Task { await h.stop() } }
        try await h.registerParties()
        let grant = await (try await h.handshake(scopes: ["goods:read"])).grant
        let claims = try JWTCodec.unverifiedClaims(of: grant.accessToken, as: AccessTokenClaims.self, error: .tokenInvalid)
        let access = VerifiedAccess(claims: claims, grant: try #require(try await h.store.grant(id: claims.gid)))
        let clientNonce = [UInt8](repeating: 7, count: 32)
        let attached = try await h.channels.attach(
            .init(transport: .udp, client_nonce: Base64URL.encode(Data(clientNonce))), access: access, remoteAddress: "127.0.0.1")
        let secrets = try SessionChannel.secrets(
            of: grant.secrets, channelID: try SessionChannel.bytes(attached.channel_id, count: 16, field: "id"), clientNonce: clientNonce,
            serverNonce: try SessionChannel.bytes(attached.server_nonce, count: 32, field: "nonce"))
        var agent = try ClientSessionEndpoint(secrets: secrets, suite: .aes256gcm, ordering: .window(64), now: Date())
        let recorder = Recorder()

        let first = try agent.call("goods.search", ["keyword": "phone"], now: Date()).frame
        await h.channels.receive(first, via: .udp, outlet: recorder.outlet("a"), remoteAddress: "10.0.0.1")
        try await eventually { recorder.count("a") == 2 }  // ack and reply

        // A datagram from another address that does not open: dropped, answers stay with "a".
        var forged = try agent.statusQuery(1, now: Date())
        forged[forged.count - 1] ^= 1
        #expect(await h.channels.receive(forged, via: .udp, outlet: recorder.outlet("evil"), remoteAddress: "10.6.6.6") == nil)
        #expect(await h.channels.refusals["tampered"] == 1)

        // The agent's next datagram comes from "b": the answer goes there.
        let second = try agent.statusQuery(1, now: Date())
        await h.channels.receive(second, via: .udp, outlet: recorder.outlet("b"), remoteAddress: "10.0.0.2")
        try await eventually { recorder.count("b") == 1 }
        #expect(recorder.count("a") == 2 && recorder.count("evil") == 0)
        // Frames sent over another transport than the channel's are dropped and counted.
        let third = try agent.statusQuery(1, now: Date())
        #expect(await h.channels.receive(third, via: .tcp, outlet: recorder.outlet("c"), remoteAddress: nil) == nil)
        #expect(await h.channels.refusals["wrong_transport"] == 1)
    }
}
