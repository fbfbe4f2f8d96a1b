import ATHCore
import ATHGateway
import ATHServer
import Foundation
import Testing
import ATHTestSupport

/// The official v0.1 clients against `ath gateway`: PyPI's `ath-sdk` through a whole flow with
/// attestations verified (Interop/python/sdk_flow.py; `.ci/run` installs the SDK), and, when
/// `ATH_OFFICIAL_E2E_SUITE` names a copy of the SDK repository's `tests/test_e2e.py`, that suite
/// in dev mode (docs/GATEWAY.md, "Interoperability"). One at a time: each runs Python processes.
@Suite(.serialized) struct OfficialSDKTests {
    static let sdkAvailable = pythonImports("ath, httpx, cryptography")

    static var repository: URL { URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized }

    /// A gateway on a loopback port whose `github` provider and upstream are `mock`. Its public
    /// URL holds the port, so the port is chosen first; another test's server may take it in
    /// between, and then another port is tried.
    static func gateway(_ mock: MockOAuthProvider, devMode: Bool) async throws -> Gateway {
        try await onAFreeLoopbackPort { try await gateway(mock, devMode: devMode, port: $0) }
    }

    static func gateway(_ mock: MockOAuthProvider, devMode: Bool, port: Int) async throws -> Gateway {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ath-sdk-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try PrivateKey.generate().pem.write(to: dir.appendingPathComponent("key.pem"), atomically: true, encoding: .utf8)
        try MockOAuthProvider.clientSecret.write(to: dir.appendingPathComponent("idp-secret"), atomically: true, encoding: .utf8)
        let yaml = """
            gateway:
              public_url: "http://127.0.0.1:\(port)"
              listen: {host: "127.0.0.1", port: \(port)}
              insecure_http: true
              dev_mode: \(devMode)
            server: {did: "did:ath:gateway.test", key_file: "key.pem"}
            store: {sqlite: "gateway.sqlite"}
            oauth: {identity_documents_on_loopback: true, native_app: "github"}
            services: ["github"]
            service:
              github:
                protocol: "oauth"
                display_name: "GitHub"
                upstream: "\(mock.baseURL)"
                scopes: ["repo = Your repositories", "read:user = Your profile"]
                routes: ["GET /userinfo read:user", "GET,POST /echo/** repo"]
                authorization_endpoint: "\(mock.baseURL)/authorize"
                token_endpoint: "\(mock.baseURL)/token"
                client_id: "\(MockOAuthProvider.clientID)"
                client_secret_file: "idp-secret"
            """
        try yaml.write(to: dir.appendingPathComponent("gateway.yaml"), atomically: true, encoding: .utf8)
        return try await Gateway.start(try await GatewayConfiguration.load(file: dir.appendingPathComponent("gateway.yaml").path))
    }

    /// Runs `arguments` under python3 with `environment` added; its status and output.
    static func python(_ arguments: [String], environment: [String: String], seconds: Double = 120) async throws -> (Int32, String) {
        let run = try await CLITests.run(URL(fileURLWithPath: "/usr/bin/env"), ["python3"] + arguments, environment: environment, seconds: seconds)
        return (run.status, run.stdout + run.stderr)
    }

    @Test func thePythonSDKWithVerifiedAttestations() async throws {
        try #require(Self.sdkAvailable, "the official SDK is missing: pip install ath-sdk==0.1.0 (.ci/run does)")
        let mock = try await MockOAuthProvider.start()
        let gateway = try await Self.gateway(mock, devMode: false)
        defer { Task { await gateway.stop(); await mock.stop() } }
        let script = Self.repository.appendingPathComponent("Interop/python/sdk_flow.py").path
        let (status, output) = try await Self.python([script], environment: ["ATH_GATEWAY_URL": gateway.configuration.publicURL])
        #expect(status == 0, "\(output)")
        let steps = output.split(separator: "\n").compactMap { try? JSONValue.parse(Array($0.utf8))["step"]?.stringValue }
        #expect(steps == ["discover", "register", "authorize", "token", "proxy", "refusals", "revoke", "native", "impostor", "done"], "\(output)")
        // Each attestation was checked against the published document: two agents, one impostor.
        let audit = try await gateway.store.auditEvents(limit: 100).map(\.event.event)
        #expect(audit.filter { $0 == "oauth.agent.registered" }.count == 2 && audit.contains("oauth.token.revoked"))
    }

    @Test(.enabled(if: ProcessInfo.processInfo.environment["ATH_OFFICIAL_E2E_SUITE"] != nil))
    func theOfficialEndToEndSuiteInDevMode() async throws {
        let suite = try #require(ProcessInfo.processInfo.environment["ATH_OFFICIAL_E2E_SUITE"])
        let mock = try await MockOAuthProvider.start()
        let gateway = try await Self.gateway(mock, devMode: true)
        defer { Task { await gateway.stop(); await mock.stop() } }
        let (status, output) = try await Self.python(
            ["-m", "pytest", suite, "-q", "-rs", "-p", "no:cacheprovider"],
            environment: ["ATH_GATEWAY_URL": gateway.configuration.publicURL, "ATH_E2E_NO_AUTO_STACK": "1", "ATH_E2E_AUTO_STACK": ""],
            seconds: 300)
        // All nine pass; a skip means the suite did not reach the gateway, which is a failure.
        #expect(status == 0 && output.contains("9 passed") && !output.contains("skipped"), "\(output)")
    }
}

/// Whether python3 can import `modules` (comma-separated): the probe before a test that needs
/// a package from PyPI, which `.ci/run` installs.
func pythonImports(_ modules: String) -> Bool {
    let probe = ChildProcess()
    probe.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    probe.arguments = ["python3", "-c", "import \(modules)"]
    probe.standardError = FileHandle.nullDevice
    guard (try? probe.run()) != nil else { return false }
    probe.waitUntilExit()
    return probe.terminationStatus == 0
}
