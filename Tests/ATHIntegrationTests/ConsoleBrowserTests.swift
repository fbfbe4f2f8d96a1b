import ATHAgent
import ATHCore
import Foundation
import ShoppingExample
import Testing

/// The consent console in a real headless browser: the user's key made and kept by WebCrypto,
/// signing in, answering a running handshake with some of its scopes, denying another, and
/// revoking a grant so that the agent is refused.
@Suite(.serialized) struct ConsoleBrowserTests {
    /// Starts a handshake and waits until the user has it pending.
    static func pendingHandshake(_ h: Harness, context: String) async throws -> Task<ATHSession, any Error> {
        let credential = try await h.credential()
        let agent = Task {
            try await h.client.handshake(
                credential: credential, scopes: ["goods:read", "order:create"], ttl: 3600, context: context, confirmationWait: .seconds(30))
        }
        for _ in 0..<200 {
            if try await h.userClient.pending().contains(where: { $0.context == context }) { return agent }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ATHError(.internalError, "the handshake never reached the user")
    }

    @Test func aUserAnswersAndRevokesInTheBrowser() async throws {
        #expect(Chromium.executable != nil, "Debian's chromium is needed (.ci/run installs it)")
        let h = try await Harness.start()
        defer { Task { await h.stop() } }
        try await h.registerParties()
        let base = h.server.baseURL.replacingOccurrences(of: "://127.0.0.1", with: "://localhost")
        let first = try await Self.pendingHandshake(h, context: "Find a phone under 5000 and order it")
        let token = try await UserRequestToken.make(
            user: h.user, key: h.userKey, server: ShoppingPlatform.did, now: Date(), typ: ConsoleLogin.enrollmentTyp)

        try await Chromium.withPage { page in
            // The one-time link: the page makes its key, enrolls it, signs in and shows the request.
            try await page.navigate("\(base)/ath/console#enroll=\(token)")
            try await page.waitFor("document.querySelector('.pending-request')")
            #expect(try await page.evaluate("document.querySelector('.pending-request .agent').textContent") == "Assistant")
            #expect(try await page.evaluate("document.querySelector('.pending-request .context').textContent") == "\u{201C}Find a phone under 5000 and order it\u{201D}")
            #expect(try await page.evaluate("document.body.textContent.includes('Place orders that you pay for')") == true)
            #expect(try await page.evaluate("location.hash") == "")  // the token leaves the address bar
            if ProcessInfo.processInfo.environment["ATH_CONSOLE_SCREENSHOT"] != nil {
                try await page.screenshot().write(to: URL(fileURLWithPath: "docs/console.png"))
            }
            // Approve goods:read only.
            _ = try await page.evaluate(
                "document.querySelector('.pending-request input[value=\"order:create\"]').click(); document.querySelector('.pending-request .approve').click(); true")
            try await page.waitFor("document.getElementById('status').textContent === 'Approved'")
            let session = try await first.value
            #expect(await session.grant.scopesGranted == ["goods:read"])
            #expect(try await session.get("/api/goods").status == 200)
            // The browser's key is one of the account's keys now; it never left the browser.
            #expect(try await h.store.activeKeys(did: h.user.value).count == 2)

            // A second request, denied from the page (reloaded: the session cookie and the key stay).
            let second = try await Self.pendingHandshake(h, context: "Order a phone case")
            try await page.navigate("\(base)/ath/console")
            try await page.waitFor("document.querySelector('.pending-request')")
            _ = try await page.evaluate("document.querySelector('.pending-request .deny').click(); true")
            try await page.waitFor("document.getElementById('status').textContent === 'Denied'")
            await #expect { try await second.value } throws: { ATHError.code($0) == .userDenied }

            // The grant from the first answer, revoked from the list: the agent is refused at once.
            let grantID = await session.grant.grantID
            try await page.waitFor("document.querySelector('[data-grant-id=\"\(grantID)\"] .revoke')")
            _ = try await page.evaluate("document.querySelector('[data-grant-id=\"\(grantID)\"] .revoke').click(); true")
            try await page.waitFor("document.getElementById('status').textContent === 'Revoked'")
            await #expect { try await session.get("/api/goods") } throws: { ATHError.code($0) == .tokenRevoked }
            // The page says "Revoked" before it has fetched the list again: the list empties after.
            try await page.waitFor("document.querySelectorAll('.grant').length === 0")
        }

        // Another browser holds no key: it is offered the sign-in form and nothing else.
        try await Chromium.withPage { page in
            try await page.navigate("\(base)/ath/console")
            try await page.waitFor("document.body.dataset.ready === 'true'")
            #expect(try await page.evaluate("document.getElementById('signin').hidden") == .bool(false))
            #expect(try await page.evaluate("document.getElementById('pending').hidden") == .bool(true))
        }
    }
}
