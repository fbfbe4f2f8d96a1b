import ATHCore
import Crypto
import Foundation
import Testing

/// Step 2's ticket carries the handshake to step 3: only the server's own, unaltered, for the
/// handshake it names, opens; a key rotated out voids it; a step 1 too large to carry is refused.
@Suite struct HandshakeTicketTests {
    let now = Date()
    let policy = ServerPolicy(scopesSupported: ["goods:read"])

    func begun(_ identity: ServerIdentity, padding: Int = 0) throws -> (ServerHandshake, ClientHandshake, JSONValue) {
        let key = PrivateKey.generate()
        var client = ClientHandshake(did: DID.key(key.publicKey), key: key)
        guard case .object(var m1) = try client.makeRequest(now: now) else { throw ATHError(.internalError, "step 1 is an object") }
        if padding > 0 { m1["padding"] = .string(String(repeating: "x", count: padding)) }
        let (handshake, m2) = try ServerHandshake.begin(
            request: .object(m1), id: Nonce.generate(), identity: identity, policy: policy, registeredKey: nil, now: now)
        return (handshake, client, m2)
    }

    func identity(_ key: PrivateKey = .generate()) -> ServerIdentity {
        ServerIdentity(did: try! DID("did:ath:shop"), keys: [key])
    }

    @Test func aTicketCarriesTheHandshakeToStepThree() throws {
        let server = identity()
        let tickets = HandshakeTicket(derivedFrom: server)
        var (handshake, client, m2) = try begun(server)
        let ticket = try tickets.make(handshake)
        // A usual step 1 leaves a ticket of about 2 KiB, well within one header field.
        #expect(ticket.utf8.count < 3 * 1024, "\(ticket.utf8.count)")
        var opened = try tickets.open(ticket, handshakeID: handshake.id)
        #expect(try opened.storedJSON() == handshake.storedJSON())
        let m3 = try client.receiveResponse(m2, now: now)
        let m4 = try opened.receiveIdentityProof(m3, policy: policy, now: now)
        #expect(m4 == (try handshake.receiveIdentityProof(m3, policy: policy, now: now)))
        #expect(opened.state == .awaitingScopeRequest)
    }

    @Test func onlyTheServersOwnUnalteredTicketForThisHandshakeOpens() throws {
        let server = identity()
        let tickets = HandshakeTicket(derivedFrom: server)
        let (handshake, _, _) = try begun(server)
        let ticket = try tickets.make(handshake)
        func refused(_ text: String, _ id: String = handshake.id, by opener: HandshakeTicket = tickets) -> Bool {
            do {
                _ = try opener.open(text, handshakeID: id)
                return false
            } catch {
                return ATHError.code(error) == .handshakeNotFound && (error as? ATHError)?.step == 3
            }
        }
        #expect(refused(ticket, Nonce.generate()), "another handshake's id")
        #expect(refused(ticket, by: HandshakeTicket(derivedFrom: identity())), "another server's key")
        // One character changed anywhere: in the document, in the MAC, in the prefix.
        let bytes = Array(ticket.utf8)
        for index in [0, 3, 10, bytes.count / 2, bytes.count - 5, bytes.count - 1] {
            var altered = bytes
            altered[index] = altered[index] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
            #expect(refused(String(decoding: altered, as: UTF8.self)), "byte \(index)")
        }
        #expect(refused(""))
        #expect(refused("v1."))
        #expect(refused(ticket + ".x"))
        #expect(refused(String(ticket.dropLast(43))))
        #expect(refused(String(repeating: "A", count: 100_000)))
        // A genuine document with a MAC from a key of the right length but not the server's.
        let document = String(ticket.split(separator: ".")[1])
        let forged = HMAC<SHA256>.authenticationCode(for: Base64URL.decode(document)!, using: SymmetricKey(size: .bits256))
        #expect(refused("v1.\(document).\(Base64URL.encode(Data(forged)))"))
        // A handshake past step 2 is not taken from a ticket, even one the server made.
        var later = handshake
        later.fail(ATHError(.invalidSignature, "x", step: 3))
        #expect(refused(try tickets.make(later)))
    }

    /// A server key being rotated out still opens what it made; once out of the ring, not.
    @Test func rotationKeepsTicketsOfTheKeyBeingRotatedOut() throws {
        let old = PrivateKey.generate()
        let before = identity(old)
        let (handshake, _, _) = try begun(before)
        let ticket = try HandshakeTicket(derivedFrom: before).make(handshake)
        let rotating = ServerIdentity(did: before.did, keys: [PrivateKey.generate()], acceptedKeys: [old])
        #expect(try HandshakeTicket(derivedFrom: rotating).open(ticket, handshakeID: handshake.id).id == handshake.id)
        let after = ServerIdentity(did: before.did, keys: rotating.keys)
        #expect(throws: ATHError.self) { try HandshakeTicket(derivedFrom: after).open(ticket, handshakeID: handshake.id) }
    }

    @Test func aStepOneTooLargeToCarryIsRefused() throws {
        let server = identity()
        let (handshake, _, _) = try begun(server, padding: HandshakeTicket.maxLength)
        #expect { try HandshakeTicket(derivedFrom: server).make(handshake) } throws: {
            ATHError.code($0) == .payloadTooLarge && ($0 as? ATHError)?.step == 1
        }
    }
}
