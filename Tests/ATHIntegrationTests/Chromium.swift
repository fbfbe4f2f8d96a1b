import ATHCore
import AsyncHTTPClient
import Foundation
import HummingbirdWSClient
import Logging
import NIOCore
import ATHTestSupport

/// A headless Chromium (Debian's `chromium`) driven over the DevTools protocol, for tests of the
/// consent console as a user meets it. It listens on a loopback port it picks, with a profile in
/// a temporary folder, and is killed when the test's closure returns.
struct Chromium {
    /// Where the browser is; the tests fail, not skip, without one (.ci/run installs it).
    static var executable: String? {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Starts the browser, connects to its page and runs `body` with a driver for it.
    static func withPage<T: Sendable>(_ body: @escaping @Sendable (Page) async throws -> T) async throws -> T {
        guard let executable else { throw ATHError(.internalError, "no chromium: install Debian's chromium package") }
        let profile = FileManager.default.temporaryDirectory.appendingPathComponent("ath-chromium-\(UUID().uuidString)")
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: executable)
        // The DevTools socket refuses WebSocket clients unless origins are allowed; it listens on
        // loopback, on a port picked at random, for the length of one test.
        process.arguments = [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--user-data-dir=\(profile.path)",
            "--remote-allow-origins=*", "--window-size=1000,1200", "about:blank",
        ]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        defer {
            process.terminate()
            process.waitUntilExit()
            try? FileManager.default.removeItem(at: profile)
        }
        // "DevTools listening on ws://127.0.0.1:<port>/devtools/browser/<id>"
        var port: Int?
        var seen = ""
        let deadline = Date().addingTimeInterval(30)
        while port == nil, Date() < deadline {
            let chunk = errors.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            seen += String(decoding: chunk, as: UTF8.self)
            if let range = seen.range(of: "ws://127.0.0.1:"), let end = seen[range.upperBound...].firstIndex(of: "/") {
                port = Int(seen[range.upperBound..<end])
            }
        }
        guard let port else { throw ATHError(.internalError, "chromium did not start: \(seen.suffix(500))") }
        let list = try await HTTPClient.shared.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)/json/list"), timeout: .seconds(10))
        let targets = try JSONValue.parse(try await list.body.collect(upTo: 1 << 20).readableBytesView)
        guard case .array(let items) = targets, let page = items.first(where: { $0["type"] == "page" }),
            let url = page["webSocketDebuggerUrl"]?.stringValue
        else { throw ATHError(.internalError, "chromium has no page target") }

        let result = ResultBox<T>()
        try await WebSocketClient.connect(
            url: url, configuration: .init(maxFrameSize: 1 << 24), logger: Logger(label: "chromium")
        ) { inbound, outbound, _ in
            let page = Page(iterator: inbound.messages(maxSize: 1 << 25).makeAsyncIterator(), outbound: outbound)
            try await page.send("Page.enable")
            try await page.send("Runtime.enable")
            result.set(try await body(page))
        }
        guard let value = result.get() else { throw ATHError(.internalError, "the browser session ended early") }
        return value
    }

    final class ResultBox<T: Sendable>: @unchecked Sendable {
        private let lock = NSLock()
        private var value: T?
        func set(_ v: T) { lock.withLock { value = v } }
        func get() -> T? { lock.withLock { value } }
    }

    /// One page: DevTools commands in order, each answered before the next is sent. Used by one
    /// task at a time (the test's), which is why its mutable state needs no lock.
    final class Page: @unchecked Sendable {
        var iterator: WebSocketInboundMessageStream.AsyncIterator
        let outbound: WebSocketOutboundWriter
        var nextID = 0
        /// What the page logged or threw, for failure messages.
        private(set) var console: [String] = []

        init(iterator: WebSocketInboundMessageStream.AsyncIterator, outbound: WebSocketOutboundWriter) {
            self.iterator = iterator
            self.outbound = outbound
        }

        @discardableResult
        func send(_ method: String, _ params: JSONValue = .object([:])) async throws -> JSONValue {
            nextID += 1
            let id = nextID
            let command: JSONValue = ["id": .integer(Int64(id)), "method": .string(method), "params": params]
            try await outbound.write(.text(String(decoding: try CanonicalJSON.bytes(command), as: UTF8.self)))
            while let message = try await iterator.next() {
                guard case .text(let text) = message, let reply = try? JSONValue.parse(Array(text.utf8)) else { continue }
                if reply["method"] == "Runtime.consoleAPICalled" || reply["method"] == "Runtime.exceptionThrown" {
                    console.append(String(text.prefix(500)))
                }
                guard reply["id"] == .integer(Int64(id)) else { continue }
                if let error = reply["error"] { throw ATHError(.internalError, "\(method): \(error)") }
                return reply["result"] ?? .null
            }
            throw ATHError(.internalError, "the browser closed the connection")
        }

        /// Evaluates `expression` in the page (awaiting a promise) and returns its JSON value.
        func evaluate(_ expression: String) async throws -> JSONValue {
            let r = try await send(
                "Runtime.evaluate", ["expression": .string(expression), "awaitPromise": true, "returnByValue": true])
            if let exception = r["exceptionDetails"] { throw ATHError(.internalError, "page error: \(exception)") }
            return r["result"]?["value"] ?? .null
        }

        /// Polls until `condition` (a JS expression) is true.
        func waitFor(_ condition: String, seconds: Double = 15) async throws {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                // While a page loads, the condition may throw (no body yet): that is "not yet".
                if (try? await evaluate("(() => { try { return Boolean(\(condition)) } catch { return false } })()")) == .bool(true) {
                    return
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            let status = try? await evaluate("document.getElementById('status') && document.getElementById('status').textContent")
            throw ATHError(.internalError, "timed out waiting for \(condition); status: \(status ?? .null); console: \(console.suffix(5))")
        }

        func navigate(_ url: String) async throws {
            try await send("Page.navigate", ["url": .string(url)])
        }

        func screenshot() async throws -> Data {
            guard let data = try await send("Page.captureScreenshot", ["format": "png"])["data"]?.stringValue,
                let png = Data(base64Encoded: data)
            else { throw ATHError(.internalError, "no screenshot") }
            return png
        }
    }
}
