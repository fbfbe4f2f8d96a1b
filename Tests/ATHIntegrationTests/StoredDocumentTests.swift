import ATHCore
import ATHStoreSQLite
import Foundation
import Testing

@testable import ATHStore

/// The store writes handshakes and grants with the protocol's JSON coder; rows written before
/// with Foundation's encoder must read back the same, and a row that does not decode is the
/// store's error, not a client's.
@Suite struct StoredDocumentTests {
    let grant = Grant(
        id: "g1", handshakeID: "h1", clientDID: try! DID("did:ath:bot"), userDID: try! DID("did:ath:alice"), scopes: ["goods:read", "order:create"],
        restrictions: Restrictions(ip_whitelist: ["10.0.0.0/8", "::1/128"], rate_limit: "100/minute", order_amount_limit: 5000.5, access_time: "09:00-17:00 UTC"),
        credentialID: "c/1", createdAt: 1_700_000_000, expiresAt: 1_700_007_200)

    @Test func grantsReadBackWhicheverEncoderWroteThem() throws {
        #expect(try StoredDocument.decode(Grant.self, StoredDocument.encode(grant)) == grant)
        let foundation = String(decoding: try JSONEncoder().encode(grant), as: UTF8.self)
        #expect(foundation.contains(#"c\/1"#))  // Foundation escapes the slash; the parser reads it back
        #expect(try StoredDocument.decode(Grant.self, foundation) == grant)
    }

    @Test func handshakesReadBackWhicheverEncoderWroteThem() throws {
        let now = Date()
        let agentKey = PrivateKey.generate(.es256)
        let identity = ServerIdentity(did: try DID("did:ath:shop"), keys: [.generate(.es256)])
        var client = ClientHandshake(did: DID.key(agentKey.publicKey), key: agentKey)
        let (handshake, _) = try ServerHandshake.begin(
            request: try client.makeRequest(now: now), id: "h1", identity: identity, policy: ServerPolicy(scopesSupported: ["goods:read"]), registeredKey: nil, now: now)
        let written = try StoredDocument.encode(handshake)
        for text in [written, String(decoding: try JSONEncoder().encode(handshake), as: UTF8.self)] {
            let read = try StoredDocument.decode(ServerHandshake.self, text)
            #expect(try StoredDocument.encode(read) == written)
            #expect(read.transcript == handshake.transcript)
        }
    }

    /// The handshake's document, written from its transcript's kept bytes, is byte for byte the
    /// canonical JSON the generic path writes, at each stage, and reads back to the same handshake.
    @Test func aHandshakesDocumentIsItsCanonicalJSON() throws {
        let now = Date()
        let agentKey = PrivateKey.generate(.es256)
        let identity = ServerIdentity(did: try DID("did:ath:shop"), keys: [.generate(.es256)])
        let policy = ServerPolicy(scopesSupported: ["goods:read"])
        var client = ClientHandshake(did: DID.key(agentKey.publicKey), key: agentKey)
        var (handshake, m2) = try ServerHandshake.begin(
            request: try client.makeRequest(now: now), id: "h1", identity: identity, policy: policy, registeredKey: nil, now: now)
        var stages = [handshake]
        _ = try handshake.receiveIdentityProof(try client.receiveResponse(m2, now: now), policy: policy, now: now)
        stages.append(handshake)
        handshake.fail(ATHError(.handshakeFailed, "ended \"here\"\n"))
        stages.append(handshake)
        for stage in stages {
            #expect(try stage.storedJSON() == CanonicalJSON.bytes(of: stage))
            let read = try StoredDocument.decode(ServerHandshake.self, try StoredDocument.encode(stage))
            #expect(read.transcript == stage.transcript && read.state == stage.state)
            #expect(try read.storedJSON() == stage.storedJSON())
        }
        #expect(stages[1].transcript.messages.count == 4)
    }

    @Test func aRowThatDoesNotDecodeIsTheStoresError() {
        for text in ["", "{", #"{"id":"g1"}"#, #"{"id":"g1","id":"g2"}"#] {
            #expect(throws: StoreError.self) { try StoredDocument.decode(Grant.self, text) }
        }
    }

    /// Documents carry their format, so that two releases can run side by side: this release
    /// reads a document without one (written before formats) and one with members it does not
    /// know (written by a newer release of the same format), and refuses one of a newer format,
    /// saying so.
    @Test func documentsCarryTheirFormat() throws {
        let written = try StoredDocument.encode(grant)
        #expect(written.hasPrefix(#"{"_format":1,"#))
        #expect(try StoredDocument.decode(Grant.self, written) == grant)
        let older = String(decoding: try CanonicalJSON.bytes(of: grant), as: UTF8.self)
        #expect(!older.contains("_format"))
        #expect(try StoredDocument.decode(Grant.self, older) == grant)
        let withUnknownMember = written.replacingOccurrences(of: #"{"_format":1,"#, with: #"{"_format":1,"added_later":{"x":[1]},"#)
        #expect(try StoredDocument.decode(Grant.self, withUnknownMember) == grant)
        let newer = written.replacingOccurrences(of: #"{"_format":1,"#, with: #"{"_format":2,"#)
        #expect { try StoredDocument.decode(Grant.self, newer) } throws: { "\($0)".contains("format 2, written by a newer release") }
        for malformed in [#"{"_format":"1","#, #"{"_format":0,"#] {
            #expect(throws: StoreError.self) { try StoredDocument.decode(Grant.self, written.replacingOccurrences(of: #"{"_format":1,"#, with: malformed)) }
        }
        struct Empty: Codable, Equatable {}
        #expect(try StoredDocument.encode(Empty()) == #"{"_format":1}"#)
        #expect(try StoredDocument.decode(Empty.self, #"{"_format":1}"#) == Empty())
    }
}
