import ATHAgent
import ATHCore
import ATHIdentity
import ATHServer
import ATHStore
import AsyncHTTPClient
import Crypto
import Foundation
import ShoppingExample
import Synchronization
import Testing
import X509
import ATHTestSupport

/// A CA folder with a server certificate for 127.0.0.1 and the AIC the test agent is bound to.
struct TLSFixture {
    let dir: URL
    let folder: CertificateAuthorityFolder
    let ca: CertificateAuthority
    let aic: AgentIdentityCode
    let serverKey = P256.Signing.PrivateKey()
    let serverCertificate: Certificate

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("ath-tls-\(UUID().uuidString)")
        folder = try CertificateAuthorityFolder.initialize(at: dir, name: "Test CASP", crlURL: nil, now: Date())
        ca = try folder.load()
        aic = try AgentIdentityCode(version: "1", arsp: "1", vendor: "34C2", ontology: "478BDF", entity: "3GF546", salt: [0x12, 0x34])
        serverCertificate = try folder.issue(
            .init(aic: nil, role: .server, publicKey: .init(serverKey.publicKey), dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"]),
            now: Date())
    }

    var trust: AgentTrust {
        AgentTrust(roots: [ca.root], revocation: .files([dir.appendingPathComponent("crl.pem")]))
    }

    func serverTLS(_ mode: (AgentTrust) -> ServerTLS.ClientCertificates, onRefusal: (@Sendable (IdentityError) -> Void)? = nil)
        -> ServerTLS
    {
        ServerTLS(
            certificateChain: [serverCertificate] + ca.issuingChain, privateKey: .init(serverKey), clientCertificates: mode(trust),
            onRefusal: onRefusal)
    }

    /// A client certificate for `key` naming `aic` (the fixture's by default).
    func agentCertificate(for key: PrivateKey, aic: AgentIdentityCode? = nil) throws -> [Certificate] {
        guard case .p256(let k) = key else { throw IdentityError(.malformedCertificate, "test keys are P-256") }
        let leaf = try folder.issue(.init(aic: aic ?? self.aic, role: .client, publicKey: .init(k.publicKey)), now: Date())
        return [leaf] + ca.issuingChain
    }

    func agentTLS(chain: [Certificate] = [], key: PrivateKey? = nil) -> AgentTLS {
        AgentTLS(serverRoots: [ca.root], certificateChain: chain, key: key)
    }

    func remove() { try? FileManager.default.removeItem(at: dir) }
}

@Suite struct MutualTLSTests {
    /// Agents present certificates, users connect with TLS alone, and the service requires
    /// that every handshake's agent showed one.
    @Test func aFullHandshakeOverMutualTLSBindsTheAgentsAIC() async throws {
        let pki = try TLSFixture()
        defer { pki.remove() }
        var h = try await Harness.start(
            tls: pki.serverTLS { .optional($0) }, agentCertificates: AgentCertificatePolicy(trust: pki.trust, required: true))
        let plain = try pki.agentTLS().makeHTTPClient()
        let mutual = try pki.agentTLS(chain: try pki.agentCertificate(for: h.agentKey), key: h.agentKey).makeHTTPClient()
        h.httpClient = plain
        do {
            #expect(h.server.baseURL.hasPrefix("https://"))
            try await h.store.registerAccount(Account(did: h.user.value, kind: .user, name: "Alice"), key: h.userKey.publicKey)
            try await h.store.registerAccount(
                Account(did: h.agent.value, kind: .agent, name: "Assistant", developer: "Dev", externalIDs: [pki.aic.description]),
                key: h.agentKey.publicKey)
            let certified = ATHClient(
                baseURL: h.server.baseURL, did: h.agent, key: h.agentKey, expectedServer: ShoppingPlatform.did, httpClient: mutual)
            let session = try await h.handshake(client: certified)
            let goods = try await session.get("/api/goods?keyword=phone")
            #expect(goods.status == 200)
            let starts = try await h.store.auditRecords(after: 0, limit: 100).filter { $0.event.event == "handshake.start" }
            #expect(starts.last?.event.detail == "aic=\(pki.aic)")

            // The same agent over TLS without its certificate: refused at step 3, nothing granted.
            let error = await #expect(throws: ATHError.self) { try await h.handshake(client: h.client) }
            #expect(error?.code == .agentCertificateInvalid)
            #expect(error?.step == 3)
        }
        try await plain.shutdown()
        try await mutual.shutdown()
        await h.stop()
    }

    /// The session layer over TLS: a wss:// channel and a TCP channel with TLS 1.3, both
    /// requiring the agent's certificate like the HTTP server; without it no connection.
    @Test func sessionChannelsRunOverMutualTLS() async throws {
        let pki = try TLSFixture()
        defer { pki.remove() }
        let serverTLS = pki.serverTLS { .required($0) }
        var h = try await Harness.start(tls: serverTLS)
        let chain = try pki.agentCertificate(for: h.agentKey)
        let agentTLS = pki.agentTLS(chain: chain, key: h.agentKey)
        let mutual = try agentTLS.makeHTTPClient()
        h.httpClient = mutual
        let tcp = try await SessionTCPListener.start(channels: h.channels, tls: serverTLS)
        do {
            try await h.registerParties()
            try await h.store.addExternalID(pki.aic.description, to: h.agent.value)
            let session = try await h.handshake(scopes: ["goods:read"])
            let tls = try agentTLS.configuration()
            for route: ATHSessionChannel.Route in [
                .webSocket(tls: tls, serverName: "localhost"), .tcp(host: "127.0.0.1", port: tcp.port, tls: tls, serverName: "localhost"),
            ] {
                let channel = try await session.openChannel(route)
                let found = try await channel.call("goods.search", ["keyword": "case"])
                guard case .array(let goods)? = found["goods"] else {
                    Issue.record("\(route): \(found)")
                    continue
                }
                #expect(goods.count == 1)
                await channel.close()
            }
            // No agent certificate: the TLS listener refuses the connection, so no channel.
            let anonymous = try pki.agentTLS().configuration()
            await #expect(throws: (any Error).self) {
                let channel = try await session.openChannel(.tcp(host: "127.0.0.1", port: tcp.port, tls: anonymous, serverName: "localhost"))
                _ = try await channel.call("goods.search")
            }
            // TLS to an address needs the name to check the certificate against.
            await #expect(throws: SessionChannelError.self) {
                _ = try await session.openChannel(.tcp(host: "127.0.0.1", port: tcp.port, tls: tls))
            }
        } catch {
            Issue.record("\(error)")
        }
        await tcp.stop()
        try await mutual.shutdown()
        await h.stop()
    }

    @Test func aCertificateForAnAICTheAgentsAccountDoesNotHoldIsRefusedAtStep1() async throws {
        let pki = try TLSFixture()
        defer { pki.remove() }
        var h = try await Harness.start(tls: pki.serverTLS { .optional($0) })
        try await h.registerParties()  // no AIC among the agent's external ids
        let mutual = try pki.agentTLS(chain: try pki.agentCertificate(for: h.agentKey), key: h.agentKey).makeHTTPClient()
        h.httpClient = mutual
        let error = await #expect(throws: ATHError.self) { try await h.handshake() }
        #expect(error?.code == .agentIdentityMismatch)
        #expect(error?.step == 1)
        #expect(error?.httpStatus == 403)
        try await mutual.shutdown()
        await h.stop()
    }

    /// An agent-only listener: no certificate, no TLS connection; a revoked one stops working
    /// at the next connection after `ath ca revoke` publishes the CRL.
    @Test func requiredClientCertificatesRefuseAbsentAndRevokedOnes() async throws {
        let pki = try TLSFixture()
        defer { pki.remove() }
        let refusals = Mutex<[IdentityError.Kind]>([])
        var h = try await Harness.start(tls: pki.serverTLS({ .required($0) }, onRefusal: { e in refusals.withLock { $0.append(e.kind) } }))
        let chain = try pki.agentCertificate(for: h.agentKey)
        let plain = try pki.agentTLS().makeHTTPClient()
        let first = try pki.agentTLS(chain: chain, key: h.agentKey).makeHTTPClient()
        do {
            await #expect(throws: (any Error).self) { _ = try await plain.get(url: h.server.baseURL + "/health").get() }
            let ok = try await first.get(url: h.server.baseURL + "/health").get()
            #expect(ok.status == .ok)

            _ = try pki.folder.revoke(serial: CertificateAuthorityFolder.hex(chain[0].serialNumber), reason: .keyCompromise, now: Date())
            let second = try pki.agentTLS(chain: chain, key: h.agentKey).makeHTTPClient()
            await #expect(throws: (any Error).self) { _ = try await second.get(url: h.server.baseURL + "/health").get() }
            try await second.shutdown()
            #expect(refusals.withLock { $0.contains(.revoked) })
            h.httpClient = first
        }
        try await plain.shutdown()
        try await first.shutdown()
        await h.stop()
    }

    /// OpenSSL as the client: TLS 1.2 gets an alert, TLS 1.3 completes.
    @Test func tls12IsRefusedAndTLS13Accepted() async throws {
        let pki = try TLSFixture()
        defer { pki.remove() }
        let h = try await Harness.start(tls: pki.serverTLS { .optional($0) })
        let root = pki.dir.appendingPathComponent("root.pem").path
        func sClient(_ version: String) async throws -> (Int32, String) {
            try await Task.detached {
                let process = ChildProcess()
                process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
                process.arguments = ["s_client", "-connect", "127.0.0.1:\(h.server.port)", version, "-CAfile", root, "-brief"]
                let input = Pipe()
                let output = Pipe()
                process.standardInput = input
                process.standardOutput = output
                process.standardError = output
                try process.run()
                try input.fileHandleForWriting.close()
                let data = output.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                return (process.terminationStatus, String(decoding: data, as: UTF8.self))
            }.value
        }
        let old = try await sClient("-tls1_2")
        #expect(old.0 != 0, "\(old.1)")
        #expect(old.1.lowercased().contains("protocol version") || old.1.lowercased().contains("alert"), "\(old.1)")
        let current = try await sClient("-tls1_3")
        #expect(current.1.contains("TLSv1.3"), "\(current.1)")
        #expect(current.1.contains("Verification: OK"), "\(current.1)")
        await h.stop()
    }

    /// TLS ended before the service (a proxy): the agent sends its chain in step 3 and proves the
    /// key by the handshake signatures themselves.
    @Test func certificatesInStep3CredentialsWhenTLSEndsElsewhere() async throws {
        let pki = try TLSFixture()
        defer { pki.remove() }
        let h = try await Harness.start(agentCertificates: AgentCertificatePolicy(trust: pki.trust, required: true))
        try await h.store.registerAccount(Account(did: h.user.value, kind: .user, name: "Alice"), key: h.userKey.publicKey)
        try await h.store.registerAccount(
            Account(did: h.agent.value, kind: .agent, name: "Assistant", developer: "Dev", externalIDs: [pki.aic.description]),
            key: h.agentKey.publicKey)
        func client(_ chain: [Certificate]) -> ATHClient {
            ATHClient(
                baseURL: h.server.baseURL, did: h.agent, key: h.agentKey, expectedServer: ShoppingPlatform.did,
                credentials: pki.agentTLS(chain: chain).credentials)
        }
        let session = try await h.handshake(client: client(try pki.agentCertificate(for: h.agentKey)))
        #expect(try await session.get("/api/goods?keyword=phone").status == 200)
        let identities = try await h.store.auditRecords(after: 0, limit: 100).filter { $0.event.event == "handshake.identity" }
        #expect(identities.last?.event.detail == "aic=\(pki.aic)")

        // A valid certificate for another key: whoever signs the handshake does not hold it.
        let stranger = try pki.agentCertificate(for: .generate())
        let mismatch = await #expect(throws: ATHError.self) { try await h.handshake(client: client(stranger)) }
        #expect(mismatch?.code == .agentIdentityMismatch)

        let none = await #expect(throws: ATHError.self) { try await h.handshake(client: client([])) }
        #expect(none?.code == .agentCertificateInvalid)

        let other = try CertificateAuthority.create(name: "Other", now: Date())
        guard case .p256(let k) = h.agentKey else { return }
        let foreign = try other.issue(.init(aic: pki.aic, role: .client, publicKey: .init(k.publicKey)), crlURL: nil, now: Date())
        let untrusted = await #expect(throws: ATHError.self) { try await h.handshake(client: client([foreign] + other.issuingChain)) }
        #expect(untrusted?.code == .agentCertificateInvalid)
        #expect(untrusted?.message.contains("untrusted") == true)
        await h.stop()
    }

    @Test func aServiceWithoutCertificatePolicyRefusesCredentials() async throws {
        let pki = try TLSFixture()
        defer { pki.remove() }
        let h = try await Harness.start()
        try await h.registerParties()
        let c = ATHClient(
            baseURL: h.server.baseURL, did: h.agent, key: h.agentKey, expectedServer: ShoppingPlatform.did,
            credentials: pki.agentTLS(chain: try pki.agentCertificate(for: h.agentKey)).credentials)
        let error = await #expect(throws: ATHError.self) { try await h.handshake(client: c) }
        #expect(error?.code == .unsupportedAlgorithm)
        await h.stop()
    }
}
