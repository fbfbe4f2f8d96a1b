import ATHAgent
import ATHCore
import ATHServer
import ATHStore
import AsyncHTTPClient
import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import ShoppingExample
import Testing
import ATHTestSupport

/// An OpenID provider we did not write: PyPI's `oidc-provider-mock` (authlib), started on a
/// loopback port for the test and stopped with it. `.ci/run` installs it with pip.
final class MockOpenIDProvider: Sendable {
    let port: Int
    let process: ChildProcess
    var issuer: String { "http://127.0.0.1:\(port)" }

    static let available = pythonImports("oidc_provider_mock")

    /// On a port the kernel picked, tried again on another when the provider could not bind
    /// the one it was given (another test's server took it in between).
    convenience init() async throws {
        try #require(Self.available, "the OIDC provider is missing: pip install oidc-provider-mock (.ci/run does)")
        try await self.init(startingOn: onAFreeLoopbackPort { port in try await Launch(port: port) })
    }

    /// On `port` exactly: the test restarts the provider where its clients already point.
    convenience init(port: Int) async throws {
        try await self.init(startingOn: Launch(port: port))
    }

    private init(startingOn launch: Launch) {
        port = launch.port
        process = launch.process
    }

    /// A started provider. Ready when discovery answers (Python starts in about a second); bounded
    /// in time, not in attempts, since an attempt that hangs waits out its own 10-second timeout.
    /// A provider that exits before then could not bind its port (`ServerStartError`); one that
    /// neither answers nor exits is reported with what it wrote to stderr.
    private struct Launch {
        let port: Int
        let process = ChildProcess()

        init(port: Int) async throws {
            self.port = port
            let log = FileManager.default.temporaryDirectory.appendingPathComponent("oidc-mock-\(port)-\(UUID().uuidString).log")
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            defer { try? FileManager.default.removeItem(at: log) }
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3", "-m", "oidc_provider_mock", "--host", "127.0.0.1", "--port", "\(port)"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = try FileHandle(forWritingTo: log)
            try process.run()
            let issuer = "http://127.0.0.1:\(port)"
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline {
                if let (status, _) = try? await http(.GET, issuer + "/.well-known/openid-configuration"), status == 200 { return }
                if !process.isRunning { throw ServerStartError.couldNotBind(host: "127.0.0.1", port: port) }
                try await Task.sleep(for: .milliseconds(100))
            }
            MockOpenIDProvider.stop(process)
            let said = (try? String(contentsOf: log, encoding: .utf8))?.suffix(2000) ?? ""
            throw ATHError(.internalError, "the OIDC provider did not answer on port \(port) within 30 s; its stderr: \(said)")
        }
    }

    /// SIGKILL: uvicorn's graceful stop waits for idle keep-alive connections to close. Not
    /// `waitUntilExit`, which blocks its thread without a bound (Foundation's run loop on Linux):
    /// a missed exit would hold the test, and the run, forever.
    func stop() { Self.stop(process) }

    static func stop(_ process: ChildProcess) {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { usleep(10_000) }
    }

    /// The provider's login form, answered for `subject`: returns where it redirects the browser.
    func authorize(_ url: String, subject: String) async throws -> String {
        let (status, headers) = try await http(.POST, url, form: "sub=\(subject)&action=authorize")
        guard status == 302, let location = headers["location"].first else {
            throw ATHError(.internalError, "the provider answered \(status) to the login form")
        }
        return location
    }
}

/// Plain HTTP without following redirects: the test plays the browser.
let noRedirects: HTTPClient = {
    var configuration = HTTPClient.Configuration()
    configuration.redirectConfiguration = .disallow
    return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
}()

@discardableResult
func http(_ method: HTTPMethod, _ url: String, form: String? = nil, json: String? = nil, headers extra: [(String, String)] = [])
    async throws -> (Int, HTTPHeaders, String)
{
    var request = HTTPClientRequest(url: url)
    request.method = method
    for (name, value) in extra { request.headers.add(name: name, value: value) }
    if let form {
        request.headers.add(name: "content-type", value: "application/x-www-form-urlencoded")
        request.body = .bytes(ByteBuffer(string: form))
    } else if let json {
        request.headers.add(name: "content-type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: json))
    }
    let response = try await noRedirects.execute(request, timeout: .seconds(10))
    let body = try await response.body.collect(upTo: 1024 * 1024)
    return (Int(response.status.code), response.headers, String(buffer: body))
}

func http(_ method: HTTPMethod, _ url: String, form: String? = nil) async throws -> (Int, HTTPHeaders) {
    let (status, headers, _) = try await http(method, url, form: form, json: nil)
    return (status, headers)
}

/// A loopback port the kernel picked, for a server that must know its URL before it starts.
/// `start` on a port chosen beforehand (a URL must name it before the server runs), tried again
/// on another port when another test's server took it in between (`ServerStartError`).
func onAFreeLoopbackPort<T>(_ start: (Int) async throws -> T) async throws -> T {
    for attempt in 1... {
        do {
            return try await start(try freeLoopbackPort())
        } catch is ServerStartError where attempt < 5 {
            continue
        }
    }
    fatalError("unreachable")
}

func freeLoopbackPort() throws -> Int {
    let reserved = try ReservedPort()
    reserved.release()
    return reserved.port
}

/// A loopback port bound (not listening) until released: connecting to it is refused.
struct ReservedPort {
    let fd: Int32
    let port: Int

    init() throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let fd = self.fd
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard fd >= 0, bound else {
            close(fd)
            throw ATHError(.internalError, "no free port")
        }
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    func release() { close(fd) }
}

@Suite(.serialized, .timeLimit(.minutes(2))) struct OpenIDProviderTests {
    /// The platform and Alice's account linked to her subject at the provider.
    func start(provider: MockOpenIDProvider, refetch: TimeInterval = 30) async throws -> Harness {
        let h = try await onAFreeLoopbackPort { port in
            var configuration = OpenIDProvider.Configuration(
                issuer: provider.issuer, clientID: "ath-shopping", clientSecret: "s3cret", redirectURI: "http://127.0.0.1:\(port)/ath/console/oidc/callback")
            configuration.minimumRefetchInterval = refetch
            return try await Harness.start(openID: OpenIDProvider(configuration), port: port)
        }
        try await h.registerParties()
        // Linked the way an admin does it: the subject's external id on Alice's account.
        try await h.store.addExternalID(OpenIDConnect.externalID(issuer: provider.issuer, subject: "alice@example.com"), to: h.user.value)
        return h
    }

    /// The browser's round trip: our start, the provider's form, our callback. Returns the
    /// callback's answer.
    func signIn(_ h: Harness, provider: MockOpenIDProvider, subject: String, tamperState: Bool = false, dropCookie: Bool = false)
        async throws -> (Int, HTTPHeaders, String)
    {
        let (status, headers, _) = try await http(.GET, h.server.baseURL + "/ath/console/oidc/start")
        #expect(status == 302)
        let toProvider = try #require(headers["location"].first)
        #expect(toProvider.hasPrefix(provider.issuer + "/oauth2/authorize?"))
        #expect(toProvider.contains("code_challenge_method=S256") && toProvider.contains("nonce="))
        let cookie = try #require(headers["set-cookie"].first?.split(separator: ";").first.map(String.init))
        #expect(headers["set-cookie"].first?.contains("HttpOnly") == true)
        var back = try await provider.authorize(toProvider, subject: subject)
        #expect(back.hasPrefix(h.server.baseURL + "/ath/console/oidc/callback?"))
        if tamperState { back = back.replacingOccurrences(of: "state=", with: "state=x") }
        return try await http(.GET, back, headers: dropCookie ? [] : [("cookie", cookie)])
    }

    @Test func aUserSignsInToTheConsoleWithTheProviderAndEnrollsABrowserKey() async throws {
        let provider = try await MockOpenIDProvider()
        defer { provider.stop() }
        let h = try await start(provider: provider)
        defer { Task { await h.stop() } }

        let (status, headers, _) = try await signIn(h, provider: provider, subject: "alice@example.com")
        #expect(status == 302)
        let location = try #require(headers["location"].first)
        #expect(location.hasPrefix("/ath/console#enroll=oidc."))
        let ticket = String(location.dropFirst("/ath/console#enroll=".count))
        let browserKey = P256.Signing.PrivateKey()
        let body = #"{"token":"\#(ticket)","public_key":"\#(Base64URL.encode(browserKey.publicKey.derRepresentation))"}"#
        let (enrolled, _, answer) = try await http(.POST, h.server.baseURL + "/ath/console/api/enroll", json: body)
        #expect(enrolled == 201, "\(answer)")
        #expect(answer.contains(h.user.value))
        #expect(try await h.store.activeKeys(did: h.user.value).contains(.p256(browserKey.publicKey)))
        // The ticket is single-use.
        let (again, _, _) = try await http(.POST, h.server.baseURL + "/ath/console/api/enroll", json: body)
        #expect(again == 401)
        let audit = try await h.store.auditRecords(after: 0, limit: 100)
        #expect(audit.contains { $0.event.event == "console.oidc_login" && $0.event.actor == h.user.value })
    }

    @Test func signInsThatAreNotLinkedOrNotThisBrowsersAreRefused() async throws {
        let provider = try await MockOpenIDProvider()
        defer { provider.stop() }
        let h = try await start(provider: provider)
        defer { Task { await h.stop() } }
        let (unlinked, _, message) = try await signIn(h, provider: provider, subject: "mallory@example.com")
        #expect(unlinked == 401)
        #expect(message.contains("no account is linked"))
        let (tampered, _, _) = try await signIn(h, provider: provider, subject: "alice@example.com", tamperState: true)
        #expect(tampered == 401)
        let (cookieless, _, _) = try await signIn(h, provider: provider, subject: "alice@example.com", dropCookie: true)
        #expect(cookieless == 401)
    }

    /// The user API with an ID token: the nonce comes from the server and counts once.
    @Test func theUserAPIAcceptsAnIDTokenWithTheServersNonceOnce() async throws {
        let provider = try await MockOpenIDProvider()
        defer { provider.stop() }
        let h = try await start(provider: provider)
        defer { Task { await h.stop() } }
        func idToken(nonce: String) async throws -> String {
            let authorize =
                provider.issuer + "/oauth2/authorize?response_type=code&client_id=ath-shopping&scope=openid"
                + "&redirect_uri=http://127.0.0.1:1/app&state=s&nonce=\(nonce)"
            let back = try await provider.authorize(authorize, subject: "alice@example.com")
            let code = try #require(URLComponents(string: back)?.queryItems?.first { $0.name == "code" }?.value)
            let (status, _, body) = try await http(
                .POST, provider.issuer + "/oauth2/token", form: "grant_type=authorization_code&code=\(code)&redirect_uri=http://127.0.0.1:1/app",
                headers: [("authorization", "Basic " + Data("ath-shopping:s3cret".utf8).base64EncodedString())])
            #expect(status == 200, "\(body)")
            return try #require(try JSONValue.parse(Data(body.utf8))["id_token"]?.stringValue)
        }
        let (_, _, nonceBody) = try await http(.GET, h.server.baseURL + "/ath/oidc/nonce")
        let nonce = try #require(try JSONValue.parse(Data(nonceBody.utf8))["nonce"]?.stringValue)
        let token = try await idToken(nonce: nonce)
        let (ok, _, list) = try await http(.GET, h.server.baseURL + "/ath/confirmations", headers: [("authorization", "OIDC \(token)")])
        #expect(ok == 200, "\(list)")
        let (replayed, _, why) = try await http(.GET, h.server.baseURL + "/ath/confirmations", headers: [("authorization", "OIDC \(token)")])
        #expect(replayed == 401)
        #expect(why.contains("already used"))
        let foreign = try await idToken(nonce: "chosen-by-the-client")
        let (refused, _, reason) = try await http(.GET, h.server.baseURL + "/ath/credentials", headers: [("authorization", "OIDC \(foreign)")])
        #expect(refused == 401)
        #expect(reason.contains("not issued by this server"))
    }

    /// The provider restarts with a new signing key: the cached JWKS no longer verifies the
    /// next token, so it is fetched again.
    @Test func aRotatedProviderKeyIsFetchedAgain() async throws {
        var provider = try await MockOpenIDProvider()
        let h = try await start(provider: provider, refetch: 0)
        defer { Task { await h.stop() } }
        let (first, _, _) = try await signIn(h, provider: provider, subject: "alice@example.com")
        #expect(first == 302)
        let port = provider.port
        provider.stop()
        provider = try await MockOpenIDProvider(port: port)
        defer { provider.stop() }
        let (second, headers, body) = try await signIn(h, provider: provider, subject: "alice@example.com")
        #expect(second == 302, "\(body)")
        #expect(headers["location"].first?.hasPrefix("/ath/console#enroll=oidc.") == true)
    }
}
