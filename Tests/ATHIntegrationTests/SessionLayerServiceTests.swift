import ATHAgent
import ATHCore
import ATHServer
import ATHStore
import Foundation
import Testing

/// The server keeps each session's traffic secrets (sealed with its proof key): after a real
/// handshake, the agent's end and the server's end of the encrypted session talk.
@Suite struct SessionLayerServiceTests {
    @Test func theAgentAndTheServerShareTheSessionKeysOfTheirHandshake() async throws {
        let h = try await Harness.start()
        defer { Task { await h.stop() } }
        try await h.registerParties()
        let grant = await (try await h.handshake(scopes: ["goods:read"])).grant
        let claims = try JWTCodec.unverifiedClaims(of: grant.accessToken, as: AccessTokenClaims.self, error: .tokenInvalid)
        let stored = try #require(try await h.store.grant(id: claims.gid))
        var server = try await h.service.sessionEndpoint(for: VerifiedAccess(claims: claims, grant: stored), ordering: .stream)
        var client = try ClientSessionEndpoint(secrets: grant.secrets, suite: .aes256gcm, ordering: .stream, now: Date())

        let (id, call) = try client.call("goods.search", ["keyword": "phone"], now: Date())
        let effects = server.receive(call, now: Date())
        #expect(effects.contains(.invoke(id: id, method: "goods.search", params: ["keyword": "phone"])))
        guard case .send(let ack) = effects.first else { return }
        #expect(client.receive(ack) == .acked(id))
        #expect(client.receive(try server.answer(id, .success(["goods": []]), now: Date())) == .replied(id, ["goods": []]))

        // The record is sealed under the server key: another session's id does not open it.
        var other = claims
        other.sid = Base64URL.encode(Data(repeating: 7, count: 16))
        await #expect(throws: ATHError.self) {
            _ = try await h.service.sessionEndpoint(for: VerifiedAccess(claims: other, grant: stored), ordering: .stream)
        }
    }
}
