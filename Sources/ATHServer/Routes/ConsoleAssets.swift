/// The consent console's page, script and style, served from memory (no file to deploy).
enum ConsoleAssets {
    static let page = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>ATH consent console</title>
        <link rel="stylesheet" href="/ath/console/console.css">
        <script src="/ath/console/console.js" defer></script>
        </head>
        <body>
        <header><h1>Agent access</h1><p id="who"></p></header>
        <main>
        <section id="signin" hidden>
          <h2>Sign in</h2>
          <p>This browser holds your console key. Enter your account's identifier to sign in with it.</p>
          <form id="signin-form"><label>Account <input id="signin-did" name="did" autocomplete="username" required></label>
          <button type="submit">Sign in</button></form>
          <p id="oidc" hidden><a href="/ath/console/oidc/start">Sign in with your identity provider</a> (this browser then gets its own key).</p>
        </section>
        <section id="pending" hidden><h2>Waiting for your answer</h2><ul id="pending-list"></ul><p id="pending-empty">Nothing is waiting.</p></section>
        <section id="grants" hidden><h2>Agents with access</h2><ul id="grant-list"></ul><p id="grants-empty">No agent has access.</p></section>
        <p id="status" role="status"></p>
        </main>
        </body>
        </html>
        """

    static let style = """
        body { font-family: system-ui, sans-serif; max-width: 44rem; margin: 2rem auto; padding: 0 1rem; color: #1d1d1f; }
        h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
        ul { list-style: none; padding: 0; }
        li.card { border: 1px solid #d2d2d7; border-radius: 10px; padding: 1rem; margin: 0.8rem 0; }
        .agent { font-weight: 600; } .developer, .meta { color: #6e6e73; font-size: 0.9rem; }
        .context { font-style: italic; margin: 0.5rem 0; }
        label.scope { display: block; margin: 0.3rem 0; }
        button { margin: 0.5rem 0.5rem 0 0; padding: 0.4rem 0.9rem; border-radius: 6px; border: 1px solid #0071e3; background: #0071e3; color: white; }
        button.secondary { background: white; color: #0071e3; }
        #status { color: #b00020; }
        """

    static let script = ConsoleScript.source
}
