import ATHCore
import Foundation

/// The v0.1 API's consent page: before the user meets the provider, the gateway says who asks
/// (the agent, its developer and purpose), for which provider and scopes, and leaves a secret
/// in the browser that the provider's callback must bring back (the session's browser binding).
///
/// Served with the consent console's headers (`ConsoleHeadersMiddleware`: no script, no
/// framing, form posts to this origin only) and its style sheet. Every value shown comes from
/// an agent's registration, so every one is escaped.
enum ConsentPage {
    /// The browser binding's cookie for one session: one cookie per session, so that two
    /// authorizations in one browser do not overwrite each other.
    static func cookieName(_ sessionID: String) -> String { "ath_consent_" + sessionID }

    /// SameSite=Lax: the cookie comes back on the provider's top-level redirect to the callback,
    /// never on a cross-site POST to the consent form.
    static func cookie(_ sessionID: String, value: String, maxAge: Int64, secure: Bool) -> String {
        "\(cookieName(sessionID))=\(value); Path=/ath; Max-Age=\(max(0, maxAge)); HttpOnly; SameSite=Lax" + (secure ? "; Secure" : "")
    }

    static func html(_ asked: OAuthAPIService.ConsentRequest, binding: String) -> String {
        let scopes = asked.scopes.map { "<li><code>\(escape($0.name))</code> \(escape($0.description))</li>" }.joined(separator: "\n")
        let purpose = asked.purpose.map { "<p>Purpose: \(escape($0))</p>" } ?? ""
        let action = "/ath/consent/" + escape(asked.sessionID)
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><title>Allow an agent?</title>
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <link rel="stylesheet" href="/ath/console/console.css"></head>
            <body><main>
            <h1>Allow an agent to use \(escape(asked.provider)) for you?</h1>
            <p>Agent <code>\(escape(asked.agentID))</code>, by \(escape(asked.developer)), asks for:</p>
            <ul>
            \(scopes)
            </ul>
            \(purpose)
            <p>If you continue, \(escape(asked.provider)) asks you to sign in and confirm. The agent never sees your \
            \(escape(asked.provider)) credentials or tokens; you can revoke its access at any time.</p>
            <form method="post" action="\(action)">
            <input type="hidden" name="binding" value="\(escape(binding))">
            <button type="submit" name="decision" value="approve">Continue to \(escape(asked.provider))</button>
            <button type="submit" name="decision" value="deny">Deny</button>
            </form>
            </main></body></html>
            """
    }

    /// Text for HTML content and quoted attribute values.
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for c in text.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }
}
