import ATHAgent
import ATHCore
import Foundation
import ShoppingExample
import Testing

/// Three `ath serve` processes on one PostgreSQL database, as behind a load balancer, driven by
/// the agent and user SDKs from this process: a handshake answered on another instance than
/// the agent waits on, a proof replayed across processes, a grant's rate limit spread over all
/// three, a revocation through one seen by another within a second, and the server key rotated
/// one process at a time without ending a session.
@Suite(.serialized) struct MultiProcessTests {
    struct Instance {
        let process: CLITests.Background
        let url: String
    }

    /// The files the instances share, in one temporary folder.
    struct Files {
        let dir: URL
        let oldKey: String, newKey: String, agentPub: String, userPub: String, adminToken: String

        init(agentKey: PrivateKey, userKey: PrivateKey, token: String) throws {
            let dir = try CLITests.temporaryDirectory()
            self.dir = dir
            func write(_ text: String, _ name: String) throws -> String {
                let path = dir.appendingPathComponent(name).path
                try text.write(toFile: path, atomically: true, encoding: .utf8)
                return path
            }
            oldKey = try write(PrivateKey.generate().pem, "old.pem")
            newKey = try write(PrivateKey.generate().pem, "new.pem")
            agentPub = try write(agentKey.publicKey.pem, "agent.pub.pem")
            userPub = try write(userKey.publicKey.pem, "user.pub.pem")
            adminToken = try write(token, "admin-token")
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: adminToken)
        }
    }

    static func serve(_ files: Files, database: String, key: String, accept: [String]) async throws -> Instance {
        let process = try CLITests.Background(
            [
                "serve", "--key", key, "--database", database, "--port", "0", "--insecure-http", "--admin-token-file", files.adminToken,
                "--register", "agent:did:ath:bot=\(files.agentPub)=Bot", "--register", "user:did:ath:alice=\(files.userPub)=Alice",
            ] + accept.flatMap { ["--accept-key", $0] }, directory: files.dir)
        let listening = try await process.line(containing: "listening on ")
        let url = try #require(listening.split(separator: " ").first { $0.hasPrefix("http://127.0.0.1:") }.map(String.init))
        return Instance(process: process, url: url)
    }

    @Test(.enabled(if: TestPostgres.available, TestPostgres.skipped)) func threeServerProcessesOnOneDatabase() async throws {
        let (database, name) = try await TestPostgres.createDatabase()
        let (agentKey, userKey) = (PrivateKey.generate(), PrivateKey.generate())
        let token = Nonce.generate() + Nonce.generate()
        let files = try Files(agentKey: agentKey, userKey: userKey, token: token)
        var instances: [Instance] = []
        defer {
            for instance in instances where instance.process.process.isRunning { instance.process.process.terminate() }
            try? FileManager.default.removeItem(at: files.dir)
        }
        // Phase 1 of a key rotation from the start: every instance accepts the next key.
        for _ in 0..<3 { instances.append(try await Self.serve(files, database: database, key: files.oldKey, accept: [files.newKey])) }
        let (agent, user) = (try DID("did:ath:bot"), try DID("did:ath:alice"))

        /// A handshake whose agent waits on `agentAt` while the user answers on `userAt`.
        func handshake(agentAt: Int, userAt: Int) async throws -> ATHSession {
            let userClient = ATHUserClient(baseURL: instances[userAt].url, did: user, key: userKey, server: ShoppingPlatform.did)
            let answering = Task {
                for _ in 0..<200 {
                    if let request = try await userClient.pending().first {
                        _ = try await userClient.answer(request, approve: request.requested_scopes)
                        return
                    }
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
            defer { answering.cancel() }
            let credential = try await UserCredential.issue(
                user: user, key: userKey, client: agent, scopes: ["goods:read"], validFor: 7200, now: Date())
            return try await ATHClient(baseURL: instances[agentAt].url, did: agent, key: agentKey, expectedServer: ShoppingPlatform.did)
                .handshake(credential: credential, scopes: ["goods:read"], ttl: 3600, context: "multi-process", confirmationWait: .seconds(20))
        }
        func get(_ session: ATHSession, at instance: Int, headers given: [(String, String)]? = nil) async throws -> HardeningTests.Reply {
            let headers: [(String, String)]
            if let given { headers = given } else { headers = await session.authHeaders("GET", "/api/goods", Data()) }
            return try await HardeningTests.send(instances[instance].url, .GET, "/api/goods", headers: headers)
        }

        // The agent waits on instance 0, the user answers on instance 1: pushed across processes.
        let session = try await handshake(agentAt: 0, userAt: 1)
        for i in 0..<3 { #expect(try await get(session, at: i).status == 200, "instance \(i)") }

        // A proof admitted by one process is a replay on another.
        let once = await session.authHeaders("GET", "/api/goods", Data())
        #expect(try await get(session, at: 2, headers: once).status == 200)
        let replayed = try await get(session, at: 0, headers: once)
        #expect(replayed.status == 401 && replayed.code == "PROOF_REPLAYED", "\(replayed)")

        // The grant's 100/minute holds across the three: 150 requests spread over them (each
        // alone would admit its 50). Never refused below the limit.
        let limited = try await handshake(agentAt: 1, userAt: 2)
        var statuses: [Int] = []
        for i in 0..<150 { statuses.append(try await get(limited, at: i % 3).status) }
        let admitted = statuses.filter { $0 == 200 }.count
        #expect(admitted >= 100 && admitted < 150 && statuses.filter { $0 == 429 }.count == 150 - admitted, "admitted \(admitted)")
        #expect(!statuses.prefix(100).contains(429), "refused before the limit")

        // A revocation through instance 2 reaches instance 0 within a second.
        let admin = ATHAdminClient(baseURL: instances[2].url, adminToken: token)
        #expect(try await get(session, at: 0).status == 200)
        try await admin.revokeGrant(await session.grant.grantID)
        let revokedAt = ContinuousClock.now
        var refused: HardeningTests.Reply?
        while ContinuousClock.now - revokedAt < .seconds(1) {
            let reply = try await get(session, at: 0)
            if reply.status == 401 {
                refused = reply
                break
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(refused?.code == "TOKEN_REVOKED", "\(String(describing: refused))")

        // Phase 2 of the rotation, one process at a time: each restarts signing with the new key
        // and accepting the old. A session made before goes on through every instance; one made
        // after (signed with the new key) is admitted by the instance still in phase 1.
        let before = try await handshake(agentAt: 0, userAt: 0)
        for i in [1, 2] {
            #expect(try await instances[i].process.interrupt() == 0)
            instances[i] = try await Self.serve(files, database: database, key: files.newKey, accept: [files.oldKey])
        }
        for i in 0..<3 { #expect(try await get(before, at: i).status == 200, "instance \(i) after the rotation") }
        let after = try await handshake(agentAt: 1, userAt: 1)
        for i in 0..<3 { #expect(try await get(after, at: i).status == 200, "instance \(i), new key") }
        // Phase 3 on instance 0: the old key dropped; only what it signed is refused there.
        #expect(try await instances[0].process.interrupt() == 0)
        instances[0] = try await Self.serve(files, database: database, key: files.newKey, accept: [])
        #expect(try await get(after, at: 0).status == 200)
        let old = try await get(before, at: 0)
        #expect(old.status == 401 && old.code == "TOKEN_INVALID", "\(old)")

        for instance in instances { #expect(try await instance.process.interrupt() == 0) }
        try? await TestPostgres.dropDatabase(name)
    }
}
