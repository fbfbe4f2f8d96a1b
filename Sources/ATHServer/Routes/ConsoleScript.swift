/// The console's script. It holds the user's key in the browser (WebCrypto, P-256, not
/// extractable, kept in IndexedDB), signs in by signing the server's challenge, and signs each
/// answer as a step-7 message exactly as `UserConfirmation.answer` does: JCS canonical JSON, the
/// transcript hash over [step 6, step 7 without its signature], ES256 over the signing input.
/// It builds every element with `textContent`, never HTML from data.
enum ConsoleScript {
    static let source = #"""
        "use strict";
        const api = (path) => "/ath/console/api/" + path;
        let csrf = null;

        function canon(v) {
          if (v === null || typeof v !== "object") return JSON.stringify(v);
          if (Array.isArray(v)) return "[" + v.map(canon).join(",") + "]";
          const keys = Object.keys(v).filter((k) => v[k] !== undefined).sort();
          return "{" + keys.map((k) => JSON.stringify(k) + ":" + canon(v[k])).join(",") + "}";
        }
        function b64url(bytes) {
          let s = "";
          for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
          return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
        }
        const utf8 = (s) => new TextEncoder().encode(s);
        const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
        const sign = async (key, text) => crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, key, utf8(text));

        function keyStore(mode, fn) {
          return new Promise((resolve, reject) => {
            const open = indexedDB.open("ath-console", 1);
            open.onupgradeneeded = () => open.result.createObjectStore("keys", { keyPath: "did" });
            open.onerror = () => reject(open.error);
            open.onsuccess = () => {
              const tx = open.result.transaction("keys", mode);
              const req = fn(tx.objectStore("keys"));
              tx.oncomplete = () => resolve(req && req.result);
              tx.onerror = () => reject(tx.error);
            };
          });
        }

        async function call(method, path, body) {
          const headers = { "Content-Type": "application/json" };
          if (csrf) headers["X-ATH-CSRF"] = csrf;
          const res = await fetch(api(path), { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
          const data = await res.json().catch(() => ({}));
          if (!res.ok) throw Object.assign(new Error(data.message || res.statusText), { code: data.code, status: res.status });
          return data;
        }
        const say = (text) => { document.getElementById("status").textContent = text; };
        const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };

        async function enroll(token) {
          const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
          const spki = await crypto.subtle.exportKey("spki", pair.publicKey);
          const { did, kid } = await call("POST", "enroll", { token, public_key: b64url(spki) });
          await keyStore("readwrite", (s) => s.put({ did, kid, privateKey: pair.privateKey }));
          history.replaceState(null, "", location.pathname);
          return did;
        }

        async function signIn(did) {
          const entry = await keyStore("readonly", (s) => s.get(did));
          if (!entry) throw new Error("this browser holds no key for " + did + "; enroll it first");
          const { challenge, server_did } = await call("POST", "challenge", { did });
          const input = canon({ challenge, context: "ATH/0.1 console login", server_did, user_did: did });
          const signature = b64url(await sign(entry.privateKey, input));
          const me = await call("POST", "login", { did, kid: entry.kid, challenge, signature });
          csrf = me.csrf;
        }

        async function answer(req, scopes) {
          const entry = await keyStore("readonly", (s) => s.get(req.user_did));
          const m7 = {
            type: "authorization_confirmation_response", request_id: req.request_id, approved: scopes.length > 0,
            approved_scopes: scopes, expires_at: req.expires_at + req.ttl, timestamp: Math.floor(Date.now() / 1000),
          };
          const hash = b64url(await sha256(utf8("[" + canon(req) + "," + canon(m7) + "]")));
          const input = canon({ client_did: req.client_did, context: "ATH/0.1 user confirmation", server_did: req.server_did, transcript_hash: hash, user_did: req.user_did });
          m7.signature = b64url(await sign(entry.privateKey, input));
          return call("POST", "confirmations/" + encodeURIComponent(req.request_id), m7);
        }

        function describeRestrictions(r) {
          if (!r) return "No limits";
          const parts = [];
          if (r.rate_limit) { const [n, per] = r.rate_limit.split("/"); parts.push("at most " + n + " requests per " + per); }
          if (r.order_amount_limit !== undefined) parts.push("orders up to " + r.order_amount_limit);
          if (r.ip_whitelist) parts.push("only from " + r.ip_whitelist.join(", "));
          if (r.access_time) parts.push("only between " + r.access_time);
          return parts.length ? "Limits: " + parts.join("; ") : "No limits";
        }

        async function render() {
          const me = await call("GET", "me");
          csrf = me.csrf;
          document.getElementById("who").textContent = "Signed in as " + (me.name || me.did);
          document.getElementById("signin").hidden = true;
          const pending = (await call("GET", "pending")).requests;
          const list = document.getElementById("pending-list");
          list.replaceChildren();
          for (const { request: req, scope_descriptions: words } of pending) {
            const card = el("li", undefined, "card pending-request");
            card.dataset.requestId = req.request_id;
            card.append(el("div", req.client_info.name, "agent"), el("div", "by " + req.client_info.developer, "developer"), el("p", "\u201c" + req.context + "\u201d", "context"));
            for (const scope of req.requested_scopes) {
              const label = el("label", undefined, "scope");
              const box = el("input");
              box.type = "checkbox"; box.checked = true; box.value = scope;
              label.append(box, " " + (words[scope] || scope) + " ", el("code", scope));
              card.append(label);
            }
            card.append(el("p", describeRestrictions(req.restrictions), "meta"), el("p", "Answer before " + new Date(req.expires_at * 1000).toLocaleTimeString(), "meta"));
            const approve = el("button", "Approve selected", "approve");
            const deny = el("button", "Deny", "secondary deny");
            approve.onclick = async () => {
              const scopes = [...card.querySelectorAll("input[type=checkbox]")].filter((b) => b.checked).map((b) => b.value);
              await act(() => answer(req, scopes), scopes.length ? "Approved" : "Denied");
            };
            deny.onclick = () => act(() => answer(req, []), "Denied");
            card.append(approve, deny);
            list.append(card);
          }
          document.getElementById("pending-empty").hidden = pending.length > 0;
          document.getElementById("pending").hidden = false;

          const grants = (await call("GET", "grants")).grants;
          const glist = document.getElementById("grant-list");
          glist.replaceChildren();
          for (const g of grants) {
            const card = el("li", undefined, "card grant");
            card.dataset.grantId = g.grant_id;
            card.append(el("div", g.client_name, "agent"));
            for (const scope of g.scopes) card.append(el("div", (g.scope_descriptions[scope] || scope) + " (" + scope + ")", "scope"));
            card.append(el("p", "Until " + new Date(g.expires_at * 1000).toLocaleString(), "meta"));
            const revoke = el("button", "Revoke", "secondary revoke");
            revoke.onclick = () => act(() => call("POST", "grants/" + encodeURIComponent(g.grant_id) + "/revoke"), "Revoked");
            card.append(revoke);
            glist.append(card);
          }
          document.getElementById("grants-empty").hidden = grants.length > 0;
          document.getElementById("grants").hidden = false;
        }

        async function act(fn, done) {
          try { await fn(); say(done); await render(); } catch (e) { say((e.code ? e.code + ": " : "") + e.message); }
        }

        async function start() {
          const form = document.getElementById("signin-form");
          form.onsubmit = async (event) => {
            event.preventDefault();
            try { await signIn(document.getElementById("signin-did").value.trim()); await render(); say(""); } catch (e) { say((e.code ? e.code + ": " : "") + e.message); }
          };
          try {
            const enrollment = new URLSearchParams(location.hash.slice(1)).get("enroll");
            if (enrollment) { const did = await enroll(enrollment); await signIn(did); }
            await render();
          } catch (e) {
            document.getElementById("signin").hidden = false;
            try { const config = await call("GET", "config"); document.getElementById("oidc").hidden = !config.oidc; } catch (_) {}
            if (e.status !== 401) say((e.code ? e.code + ": " : "") + e.message);
          }
          document.body.dataset.ready = "true";
        }
        document.addEventListener("DOMContentLoaded", start);
        """#
}
