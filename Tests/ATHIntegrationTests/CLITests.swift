import ATHCore
import Foundation
import Synchronization
import Testing
import ATHTestSupport

/// The `ath` command as a user runs it: the binary SwiftPM built beside this test bundle, run
/// as a process, its output and exit status read. The commands are thin over the SDKs, which
/// other suites test; these check what only the command does: files, modes, output, refusals.
/// One test at a time: each starts debug builds of a large binary, and several at once load
/// the machine enough to upset other suites' timing.
@Suite(.serialized) struct CLITests {
    struct Run {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// The `ath` built with the tests (`swift build --build-tests`, which `swift test` runs).
    static var binary: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("ath")
    }

    /// Runs `ath` with `arguments`; fails the test past `seconds` (and stops the process).
    static func ath(_ arguments: [String], seconds: Double = 60) async throws -> Run {
        try await run(binary, arguments, seconds: seconds)
    }

    /// Runs `executable` with `arguments` (and `environment` added to this process's); fails the
    /// test past `seconds` (and stops the process).
    static func run(_ executable: URL, _ arguments: [String], environment: [String: String] = [:], seconds: Double) async throws -> Run {
        let process = ChildProcess()
        process.executableURL = executable
        process.arguments = arguments
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new } }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Drained while it runs (a full pipe would block the process), by blocking reads on
        // Dispatch's threads: on a task they would hold one of the two threads every other
        // suite's tasks run on, for as long as the process runs.
        async let stdout = Self.readToEnd(out.fileHandleForReading)
        async let stderr = Self.readToEnd(err.fileHandleForReading)
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning {
            if Date() > deadline {
                process.terminate()
                Issue.record("\(executable.lastPathComponent) \(arguments.joined(separator: " ")) ran past \(seconds) s")
                break
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        process.waitUntilExit()
        return Run(
            status: process.terminationStatus, stdout: String(decoding: await stdout, as: UTF8.self),
            stderr: String(decoding: await stderr, as: UTF8.self))
    }

    static func readToEnd(_ handle: FileHandle) async -> Data {
        await withCheckedContinuation { done in
            DispatchQueue.global().async { done.resume(returning: handle.readDataToEndOfFile()) }
        }
    }

    static func temporaryDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ath-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test func theBinaryIsBuiltBesideTheTests() {
        #expect(FileManager.default.isExecutableFile(atPath: Self.binary.path), "no ath at \(Self.binary.path)")
    }

    @Test func keygenWritesAPrivateKeyOnlyItsOwnerReadsAndNeverOverwritesOne() async throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        for alg in SignatureAlgorithm.allCases {
            let file = dir.appendingPathComponent("\(alg.rawValue).pem")
            let run = try await Self.ath(["keygen", "--alg", alg.rawValue, "--out", file.path])
            #expect(run.status == 0, "\(run.stderr)")
            let key = try PrivateKey(pem: String(contentsOf: file, encoding: .utf8))
            #expect(key.algorithm == alg)
            // What it prints is the same key: its public PEM, did:key and kid.
            #expect(run.stdout.contains(key.publicKey.pem))
            #expect(run.stdout.contains("did:key  \(DID.key(key.publicKey))"))
            #expect(run.stdout.contains("kid      \(key.publicKey.thumbprint)"))
            let mode = try FileManager.default.attributesOfItem(atPath: file.path)[.posixPermissions] as? Int
            #expect(mode == 0o600)
            // A second run would replace the key: refused, the file unchanged.
            let again = try await Self.ath(["keygen", "--alg", alg.rawValue, "--out", file.path])
            #expect(again.status != 0)
            #expect(again.stderr.contains("exists; not overwriting a key"))
            #expect(try PrivateKey(pem: String(contentsOf: file, encoding: .utf8)).publicKey == key.publicKey)
        }
        let unknown = try await Self.ath(["keygen", "--alg", "RS256", "--out", dir.appendingPathComponent("rsa.pem").path])
        #expect(unknown.status != 0)
        #expect(unknown.stderr.contains("--alg must be ES256 or EdDSA"))
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("rsa.pem").path))
    }

    @Test func userAuthorizeIssuesACredentialThatVerifiesForItsAgentOnly() async throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let keyFile = dir.appendingPathComponent("user.pem")
        #expect(try await Self.ath(["keygen", "--out", keyFile.path]).status == 0)
        let key = try PrivateKey(pem: String(contentsOf: keyFile, encoding: .utf8))
        let user = DID.key(key.publicKey), agent = try DID("did:ath:assistant"), server = try DID("did:ath:shop")
        let run = try await Self.ath([
            "user", "authorize", "--user", user.value, "--key", keyFile.path, "--client", agent.value,
            "--scopes", "goods:read,order:create", "--ttl", "600", "--audience", server.value,
        ])
        #expect(run.status == 0, "\(run.stderr)")
        let credential = run.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let claims = try await UserCredential.verify(credential, userKey: key.publicKey, client: agent, server: server, now: Date())
        #expect(claims.scopes == ["goods:read", "order:create"])
        #expect(claims.exp - claims.iat == 600)
        await #expect(throws: ATHError.self) {
            _ = try await UserCredential.verify(
                credential, userKey: key.publicKey, client: DID("did:ath:other"), server: server, now: Date())
        }
        await #expect(throws: ATHError.self) {
            _ = try await UserCredential.verify(
                credential, userKey: key.publicKey, client: agent, server: DID("did:ath:elsewhere"), now: Date())
        }
        // A key file that is not there, and a user that is not a DID: an error, no credential.
        let missing = try await Self.ath([
            "user", "authorize", "--user", user.value, "--key", dir.appendingPathComponent("none.pem").path, "--client", agent.value,
            "--scopes", "goods:read",
        ])
        #expect(missing.status != 0 && missing.stdout.isEmpty)
        #expect(missing.stderr.contains("cannot read the key file"))
        let notDID = try await Self.ath([
            "user", "authorize", "--user", "alice", "--key", keyFile.path, "--client", agent.value, "--scopes", "goods:read",
        ])
        #expect(notDID.status != 0 && notDID.stdout.isEmpty)
        #expect(notDID.stderr.contains("is not a DID"))
    }

    /// A process left running (a server, a user watching): its output read as it comes.
    final class Background: Sendable {
        let process: ChildProcess
        private final class Output: Sendable { let data = Mutex<Data>(Data()) }
        private let output = Output()

        /// `directory`: where the process runs (files it makes by default go there).
        init(_ arguments: [String], directory: URL? = nil) throws {
            process = ChildProcess()
            process.executableURL = CLITests.binary
            process.arguments = arguments
            if let directory { process.currentDirectoryURL = directory }
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            let output = self.output
            pipe.fileHandleForReading.readabilityHandler = { handle in
                let data = handle.availableData
                output.data.withLock { $0.append(data) }
            }
            try process.run()
        }

        /// A process whose test ended without stopping it (a failure half-way, a start that did
        /// not answer) stops with it: left running, a server keeps its database connections, and
        /// the next tests on that database find none free.
        deinit {
            if process.isRunning { process.terminate() }
        }

        var text: String { output.data.withLock { String(decoding: $0, as: UTF8.self) } }

        /// The first line containing `needle`, once printed; fails past `seconds`.
        func line(containing needle: String, seconds: Double = 60) async throws -> String {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if let line = text.split(separator: "\n").first(where: { $0.contains(needle) }) { return String(line) }
                guard process.isRunning else { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            throw ATHError(.internalError, "no '\(needle)' from ath \(process.arguments?.first ?? ""); output: \(text.suffix(2000))")
        }

        /// Sends SIGINT and waits for the exit status; nil if it did not stop within `seconds`.
        func interrupt(seconds: Double = 20) async throws -> Int32? {
            if process.isRunning { process.interrupt() }
            let deadline = Date().addingTimeInterval(seconds)
            while process.isRunning {
                guard Date() < deadline else {
                    process.terminate()
                    return nil
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            return process.terminationStatus
        }
    }

    /// The README's "by hand" walk-through: `ath serve` with registered accounts (on SwiftNIO's
    /// event loops, as shipped), the user's credential and answers from the CLI, the agent's
    /// handshake and a protected call, then the server stopped by Ctrl-C.
    @Test func serveHandshakeAndCallAsTheREADMEShows() async throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        func write(_ text: String, _ name: String) throws -> String {
            let path = dir.appendingPathComponent(name).path
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }
        let (serverKey, agentKey, userKey) = (PrivateKey.generate(), PrivateKey.generate(), PrivateKey.generate())
        let server = try write(serverKey.pem, "server.pem"), agent = try write(agentKey.pem, "agent.pem")
        let user = try write(userKey.pem, "user.pem")
        let agentPub = try write(agentKey.publicKey.pem, "agent.pub.pem"), userPub = try write(userKey.publicKey.pem, "user.pub.pem")
        let store = dir.appendingPathComponent("ath.sqlite").path
        let serve = try Background([
            "serve", "--key", server, "--store", store, "--port", "0", "--insecure-http", "--register", "agent:did:ath:bot=\(agentPub)=Bot",
            "--register", "user:did:ath:alice=\(userPub)=Alice",
        ])
        var stopped: Int32?
        do {
            let listening = try await serve.line(containing: "listening on ")
            let url = try #require(listening.split(separator: " ").first { $0.hasPrefix("http://127.0.0.1:") }.map(String.init))
            let authorize = try await Self.ath([
                "user", "authorize", "--user", "did:ath:alice", "--key", user, "--client", "did:ath:bot", "--scopes", "goods:read",
            ])
            #expect(authorize.status == 0, "\(authorize.stderr)")
            let credential = try write(authorize.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "cred.jwt")
            let watch = try Background([
                "user", "watch", "--url", url, "--server", "did:ath:ecommerce_platform_001", "--user", "did:ath:alice", "--key", user,
                "--approve-all",
            ])
            let handshake = try await Self.ath([
                "handshake", "--url", url, "--did", "did:ath:bot", "--key", agent, "--credential", "@\(credential)",
                "--scopes", "goods:read", "--json",
            ])
            #expect(handshake.status == 0, "\(handshake.stderr)")
            let grant = try JSONValue.parse(Data(handshake.stdout.utf8))
            #expect(grant["scopes_granted"] == ["goods:read"])
            #expect(grant["server_did"] == "did:ath:ecommerce_platform_001")
            #expect(try await watch.line(containing: "asks for: goods:read").contains("Bot"))
            let call = try await Self.ath([
                "agent", "call", "--url", url, "--did", "did:ath:bot", "--key", agent, "--credential", "@\(credential)", "--scopes",
                "goods:read", "/api/goods?keyword=phone",
            ])
            #expect(call.status == 0, "\(call.stderr)")
            #expect(call.stdout.hasPrefix("HTTP 200") && call.stdout.contains("Phone X"))
            // A scope the credential does not hold: refused, with the protocol's code.
            let beyond = try await Self.ath([
                "handshake", "--url", url, "--did", "did:ath:bot", "--key", agent, "--credential", "@\(credential)", "--scopes",
                "order:create",
            ])
            #expect(beyond.status != 0)
            #expect(beyond.stderr.contains("SCOPE_EXCEEDS_CREDENTIAL"))
            _ = try await watch.interrupt()
        } catch {
            _ = try await serve.interrupt()
            throw error
        }
        stopped = try await serve.interrupt()
        #expect(stopped == 0, "serve did not stop on SIGINT: \(serve.text.suffix(1000))")
        #expect(serve.text.contains("stopping"))
        // Served again on the same store: the accounts are there, not registered twice.
        let again = try Background([
            "serve", "--key", server, "--store", store, "--port", "0", "--insecure-http", "--register", "agent:did:ath:bot=\(agentPub)=Bot",
        ])
        _ = try await again.line(containing: "listening on ")
        #expect(try await again.interrupt() == 0)
        let badKey = try await Self.ath([
            "serve", "--key", server, "--store", store, "--port", "0", "--insecure-http", "--register", "agent:did:ath:bot2=\(server)=Bot",
        ])
        #expect(badKey.status != 0)
    }

    /// The README's first command, as JSON lines: every step of the scenario, then success.
    @Test func demoRunsTheWholeScenario() async throws {
        let run = try await Self.ath(["demo", "--json"], seconds: 120)
        #expect(run.status == 0, "\(run.stderr)")
        struct Line: Decodable {
            var actor: String
            var step: String
            var text: String
        }
        let lines = try run.stdout.split(separator: "\n").map { try JSONDecoder().decode(Line.self, from: Data($0.utf8)) }
        let steps = Set(lines.map(\.step))
        for step in (1...9).map(String.init) { #expect(steps.contains(step), "no step \(step)") }
        #expect(lines.contains { $0.text.contains("AMOUNT_LIMIT_EXCEEDED") })
        #expect(lines.contains { $0.text.contains("SCOPE_INSUFFICIENT") })
        #expect(Set(lines.map(\.actor)).isSuperset(of: ["assistant", "platform", "user"]))
    }
}
