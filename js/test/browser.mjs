// Proof in a real browser: Debian's chromium (headless) driven by
// playwright-core loads pages through the real trackgate binary in front of a
// small test origin, and every claim is checked in the NDJSON trackgate
// writes. Run by tests/browser.rs (so by `make test`); by hand:
//   TRACKGATE_BIN=target/debug/trackgate node js/test/browser.mjs
// Exits non-zero with the failing check on stderr.

import { spawn } from "node:child_process";
import { appendFileSync, mkdtempSync, readFileSync, rmSync, existsSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

const BIN = process.env.TRACKGATE_BIN && resolve(process.env.TRACKGATE_BIN);
const CHROMIUM = process.env.TRACKGATE_CHROMIUM || "/usr/bin/chromium";
if (!BIN || !existsSync(BIN)) throw new Error(`TRACKGATE_BIN must name the trackgate binary (got ${BIN})`);
if (!existsSync(CHROMIUM)) throw new Error(`no chromium at ${CHROMIUM}: apt-get install -y chromium`);

const NONCE = "R4nd0mN0nce";
const log = (...a) => console.log("[browser]", ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let failures = 0;
function check(cond, what, detail) {
  if (cond) log("ok  ", what);
  else {
    failures++;
    console.error("[browser] FAIL", what, detail === undefined ? "" : JSON.stringify(detail).slice(0, 2000));
  }
}

// ---- the test origin --------------------------------------------------------
// `tall`: an inline style makes the page scrollable (not on the CSP page,
// whose policy forbids inline styles).
const page = (title, body, tall = true) =>
  `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title></head><body>` +
  `<h1>${title}</h1>${body}${tall ? '<div style="height:3000px">tall</div>' : ""}</body></html>`;
const origin = createServer((req, res) => {
  const path = req.url.split("?")[0];
  const html = (status, headers, body) => {
    res.writeHead(status, Object.assign({ "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store" }, headers));
    res.end(body);
  };
  if (path === "/favicon.ico") {
    res.writeHead(204);
    return res.end();
  }
  if (path === "/csp-hash")
    return html(200, { "Content-Security-Policy": "default-src 'self'; script-src 'self'; object-src 'none'" }, page("Hash CSP", "", false));
  if (path === "/csp")
    return html(
      200,
      { "Content-Security-Policy": `default-src 'self'; script-src 'nonce-${NONCE}'; object-src 'none'; base-uri 'none'` },
      page("Strict CSP", `<script nonce="${NONCE}">window.pageScriptRan = true;</script>`, false),
    );
  if (path === "/standalone") {
    // A page not behind the proxy, written for GoTrack: loads the tracker
    // from trackgate and calls GoTrackPixel.init.
    const tg = new URL(req.url, "http://x").searchParams.get("tg");
    return html(
      200,
      {},
      page(
        "Standalone",
        // GoTrack's documented snippet, as is.
        `<script src="${tg}/pixel.umd.js"></script>` +
          `<script>GoTrackPixel.init({ endpoint: ${JSON.stringify(tg + "/collect")} });</script>`,
      ),
    );
  }
  if (path === "/" || path === "/next" || path === "/late")
    return html(200, {}, page(path === "/" ? "Home" : path.slice(1), `<button id="buy" data-tg-event="buy" data-tg-plan="pro">Buy</button>`));
  res.writeHead(404, { "Content-Type": "text/plain" });
  res.end("not found\n");
});
await new Promise((r) => origin.listen(0, "127.0.0.1", r));
const originUrl = `http://127.0.0.1:${origin.address().port}`;

// ---- trackgate --------------------------------------------------------------
const procs = [];
async function startTrackgate(extraEnv) {
  const dir = mkdtempSync(join(tmpdir(), "trackgate-browser-"));
  const logPath = join(dir, "events.ndjson");
  const child = spawn(BIN, [], {
    cwd: dir,
    env: {
      PATH: process.env.PATH,
      SERVER_ADDR: "127.0.0.1:0",
      CORES: "1",
      LOG_PATH: logPath,
      LOG_FORMAT: "json",
      FLUSH_INTERVAL_MS: "10",
      HMAC_SECRET: "browser-test-secret-0123456789",
      FORWARD_DESTINATION: originUrl,
      ...extraEnv,
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  procs.push({ child, dir, logPath });
  const stderr = [];
  const addr = await new Promise((resolve, reject) => {
    let buf = "";
    const t = setTimeout(() => reject(new Error("trackgate did not start: " + stderr.join("\n"))), 20000);
    child.stderr.on("data", (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        stderr.push(line);
        if (line.includes('"msg":"listening"')) {
          clearTimeout(t);
          resolve(JSON.parse(line).addr);
        }
      }
    });
    child.on("exit", (c) => reject(new Error(`trackgate exited ${c}: ${stderr.join("\n")}`)));
  });
  const events = () =>
    existsSync(logPath)
      ? readFileSync(logPath, "utf8")
          .split("\n")
          .filter(Boolean)
          .map((l) => JSON.parse(l))
      : [];
  const waitFor = async (what, pred, ms = 10000) => {
    const end = Date.now() + ms;
    for (;;) {
      const hit = events().filter(pred);
      if (hit.length) return hit[0];
      if (Date.now() > end) {
        check(false, `event within ${ms} ms: ${what}`, events().map((e) => [e.type, e.source, e.url, e.pageview_id]));
        return undefined;
      }
      await sleep(50);
    }
  };
  return { base: `http://${addr}`, events, waitFor, stderr };
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    // A non-localhost name for 127.0.0.1: plain HTTP there is not a secure
    // context, so the page has no crypto.subtle (the pure-JS signer's case).
    "--host-resolver-rules=MAP insecure.test 127.0.0.1",
  ],
});

async function newPage(ctx) {
  const p = await ctx.newPage();
  p.consoleLines = [];
  p.on("console", (m) => p.consoleLines.push(`${m.type()}: ${m.text()}`));
  p.on("pageerror", (e) => p.consoleLines.push(`pageerror: ${e.message}`));
  return p;
}

try {
  const tg = await startTrackgate({ CORS_ORIGINS: originUrl });
  const ctx = await browser.newContext();

  // 1. A page through the proxy: pageview joined to page_served, auth verified.
  const p1 = await newPage(ctx);
  await p1.goto(tg.base + "/");
  const served = await tg.waitFor("page_served for /", (e) => e.type === "page_served" && e.payload.path === "/");
  const pv = served?.pageview_id;
  check(typeof pv === "string" && pv.length === 36, "page_served carries a pageview_id", served);
  const view = await tg.waitFor("pageview of the load", (e) => e.type === "pageview" && e.source !== "server" && e.pageview_id === pv);
  check(view && view.auth && view.auth.scheme === "tg1" && view.auth.kind === "p" && view.auth.pageview_id === pv, "pageview.pageview_id equals page_served's, auth verified (kind p)", view?.auth);
  check(view?.source === "stealth", "sent in stealth mode (POST to the page's own path)", view?.source);
  check(view?.url === tg.base + "/", "pageview url is location.href", view?.url);
  const client = view?.payload?.client;
  check(client && client.score > 0 && client.reasons.length > 0, "headless chromium flagged: score > 0 with reasons", client && { score: client.score, reasons: client.reasons, verdict: client.verdict });
  check(client?.reasons?.includes("headless_ua") || client?.reasons?.includes("webdriver"), "reasons name the headless/automation detectors", client?.reasons);
  check(
    Array.isArray(client?.detectors) && client.detectors.length >= 10 && client.detectors.every((d) => typeof d.id === "string" && typeof d.score === "number" && d.details && typeof d.details === "object"),
    "every detector arrives as {id, score, details}",
    client?.detectors,
  );
  check(client?.score === client?.detectors?.reduce((a, d) => a + d.score, 0), "score is the sum of the detectors' scores", client);
  const dev = client?.device;
  check(dev && dev.screen && dev.viewport && typeof dev.tz === "string" && Array.isArray(dev.languages) && dev.storage, "device signals sent under payload.client.device", dev);
  log("headless verdict:", client?.verdict, "score", client?.score, "reasons", client?.reasons?.join(","));

  // 2. SPA navigation, custom event, data-tg-event click.
  await p1.evaluate(() => history.pushState({}, "", "/spa/step-2?utm_source=spa"));
  const spa = await tg.waitFor("SPA pageview", (e) => e.type === "pageview" && e.payload?.spa === "pushState");
  check(spa?.url === tg.base + "/spa/step-2?utm_source=spa" && spa?.pageview_id === pv && spa?.referrer === tg.base + "/", "pushState sends a pageview with the new URL, same pageview, old URL as referrer", spa);
  check(spa?.payload?.utm?.source === "spa", "UTM of the SPA URL extracted by the server", spa?.payload);
  await p1.evaluate(() => window.trackgate.track("signup", { plan: "pro", step: 2 }));
  const custom = await tg.waitFor("custom event", (e) => e.type === "signup");
  check(custom?.payload?.props?.plan === "pro" && custom?.payload?.props?.step === 2 && custom?.pageview_id === pv && custom?.auth, "trackgate.track(name, props) → type name, payload.props, signed", custom);
  await p1.click("#buy");
  const click = await tg.waitFor("data-tg-event click", (e) => e.type === "buy");
  check(click?.payload?.props?.plan === "pro", "data-tg-event click with data-tg-* props", click?.payload);
  check(click?.payload?.client?.detectors?.[0]?.id === "no_input_before_interaction" && click.payload.client.score === 0, "a real (trusted) click after pointer input is not flagged", click?.payload?.client);
  await p1.evaluate(() => document.getElementById("buy").dispatchEvent(new MouseEvent("click", { bubbles: true })));
  const fake = await tg.waitFor("synthetic click", (e) => e.type === "buy" && e.payload?.client?.score > 0);
  check(fake?.payload?.client?.detectors?.[0]?.details?.trusted === false, "a script-dispatched click is flagged by the interaction-gated detector", fake?.payload?.client);

  // 3. Leaving the page: engagement via sendBeacon (?_tg=).
  await p1.mouse.wheel(0, 1500);
  await sleep(300);
  const beacons = [];
  p1.on("request", (r) => r.method() === "POST" && /[?&]_tg=tg1\./.test(r.url()) && beacons.push(new URL(r.url()).pathname));
  await p1.goto(tg.base + "/next");
  const eng = await tg.waitFor("engagement on leave", (e) => e.type === "engagement" && e.pageview_id === pv);
  check(eng && eng.auth && eng.payload.visible_ms > 0 && eng.payload.pointer >= 1 && eng.payload.scroll_max_pct > 0, "engagement sent as the page is left (visible time, scroll depth, input counts), signed", eng?.payload);
  check(["hidden", "pagehide"].includes(eng?.payload?.trigger), "engagement triggered by visibilitychange/pagehide", eng?.payload?.trigger);
  check(beacons.includes("/spa/step-2"), "sent by sendBeacon to the page's own path with ?_tg=", beacons);
  check(!p1.consoleLines.some((l) => /^error|pageerror/.test(l)), "no console errors on the tracked pages", p1.consoleLines);

  // 4. Strict nonce CSP: our tags carry the page's nonce; no violation.
  const p2 = await newPage(ctx);
  await p2.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener("securitypolicyviolation", (e) => window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI));
  });
  await p2.goto(tg.base + "/csp");
  const cspServed = await tg.waitFor("page_served for /csp", (e) => e.type === "page_served" && e.payload.path === "/csp");
  check(cspServed?.payload?.csp?.action === "nonce", "trackgate used the page's nonce", cspServed?.payload?.csp);
  const cspView = await tg.waitFor("pageview on the CSP page", (e) => e.type === "pageview" && e.source !== "server" && e.pageview_id === cspServed?.pageview_id);
  check(cspView?.auth?.kind === "p", "the tracker ran and delivered a signed pageview under a strict nonce CSP", cspView?.auth);
  const violations = await p2.evaluate(() => window.__cspViolations);
  check(await p2.evaluate(() => window.pageScriptRan === true), "the page's own nonce script ran");
  check(violations.length === 0, "no securitypolicyviolation events", violations);
  check(!p2.consoleLines.some((l) => /Content Security Policy|Refused to/i.test(l)), "no CSP messages in the console", p2.consoleLines);
  // 4b. A policy with neither nonce nor 'unsafe-inline': trackgate adds the
  // tracker's sha256 to script-src; the browser's hash of the inline text
  // must match it.
  const p2b = await newPage(ctx);
  await p2b.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener("securitypolicyviolation", (e) => window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI));
  });
  await p2b.goto(tg.base + "/csp-hash");
  const hashServed = await tg.waitFor("page_served for /csp-hash", (e) => e.type === "page_served" && e.payload.path === "/csp-hash");
  check(hashServed?.payload?.csp?.action === "hash", "trackgate added the tracker's hash to script-src", hashServed?.payload?.csp);
  const hashView = await tg.waitFor("pageview on the hash-CSP page", (e) => e.type === "pageview" && e.source !== "server" && e.pageview_id === hashServed?.pageview_id);
  check(hashView?.auth?.kind === "p", "the tracker ran under a hash-only CSP (the browser's hash matches)", hashView?.auth);
  check((await p2b.evaluate(() => window.__cspViolations)).length === 0 && !p2b.consoleLines.some((l) => /Content Security Policy|Refused to/i.test(l)), "no CSP violation on the hash-CSP page", p2b.consoleLines);
  await ctx.close();

  // 5. Token expiry. trackgate with 2-second tokens.
  const short = await startTrackgate({ TOKEN_TTL_S: "2" });
  const ctx2 = await browser.newContext();
  // 5a. The page's clock is frozen, so the tracker cannot see its token age:
  // it sends with the expired token, gets 401, refreshes once, resends.
  const p3 = await newPage(ctx2);
  await p3.clock.install();
  await p3.clock.pauseAt(new Date(Date.now() + 1000));
  const statuses = [];
  p3.on("response", (r) => statuses.push(`${r.request().method()} ${new URL(r.url()).pathname} ${r.status()}`));
  await p3.goto(short.base + "/late");
  const lateServed = await short.waitFor("page_served for /late", (e) => e.type === "page_served" && e.payload.path === "/late");
  await short.waitFor("pageview on /late", (e) => e.type === "pageview" && e.source !== "server" && e.pageview_id === lateServed?.pageview_id);
  await sleep(3500); // past the token's 2 s (the server's check is age > TTL)
  await p3.evaluate(() => {
    window.trackgate.track("after_expiry", { n: 1 });
    return window.trackgate.flush();
  });
  const late = await short.waitFor("event sent after expiry", (e) => e.type === "after_expiry");
  check(statuses.some((s) => /^POST \/late 401$/.test(s)), "the expired token was refused (401)", statuses);
  check(statuses.some((s) => /^GET \/hmac\/public-key 200$/.test(s)), "the tracker refreshed its token from /hmac/public-key?pv=", statuses);
  check(late?.auth?.kind === "f" && late?.pageview_id === lateServed?.pageview_id, "the event was still delivered, with the refreshed token, on the same pageview", late);
  await ctx2.close();
  // 5b. With a running clock (a new context: Playwright's clock is
  // per context) the tracker refreshes before expires_at: no 401.
  const ctx3 = await browser.newContext();
  const p4 = await newPage(ctx3);
  const statuses4 = [];
  p4.on("response", (r) => statuses4.push(`${r.request().method()} ${new URL(r.url()).pathname} ${r.status()}`));
  await p4.goto(short.base + "/next");
  const nextServed = await short.waitFor("page_served for /next", (e) => e.type === "page_served" && e.payload.path === "/next");
  await sleep(3500);
  await p4.evaluate(() => {
    window.trackgate.track("kept_fresh", {});
    return window.trackgate.flush();
  });
  const fresh = await short.waitFor("event sent by a page open past its first token", (e) => e.type === "kept_fresh");
  check(fresh?.auth?.kind === "f" && fresh?.pageview_id === nextServed?.pageview_id && !statuses4.some((s) => / 401$/.test(s)), "a page left open refreshes its token before it expires (no 401)", { fresh: fresh?.auth, statuses4 });
  check(statuses4.some((s) => /^GET \/hmac\/public-key 200$/.test(s)), "the refresh came from the tracker's timer", statuses4);
  // Closing the tab (not navigating): the engagement beacon still leaves,
  // signed with the refreshed token.
  await p4.close({ runBeforeUnload: true });
  const closed = await short.waitFor("engagement on tab close", (e) => e.type === "engagement" && e.pageview_id === nextServed?.pageview_id);
  check(closed?.auth?.kind === "f", "engagement sent when the tab is closed, with the refreshed token", closed && { auth: closed.auth, payload: closed.payload });
  await ctx3.close();

  // 6. A page elsewhere (the origin itself, not proxied) using /pixel.js
  // and GoTrackPixel.init: token from /hmac/public-key, events to /collect
  // across origins (CORS).
  const ctx4 = await browser.newContext();
  const p5 = await newPage(ctx4);
  await p5.goto(originUrl + "/standalone?tg=" + encodeURIComponent(tg.base));
  const standalone = await tg.waitFor("pageview from a page not behind the proxy", (e) => e.type === "pageview" && e.url === originUrl + "/standalone?tg=" + encodeURIComponent(tg.base));
  check(standalone?.source === "collect" && standalone?.auth?.kind === "f" && standalone?.payload?.client?.detectors?.length >= 10, "GoTrack's snippet (pixel.umd.js + GoTrackPixel.init({endpoint})) on a page not behind the proxy: signed pageview to /collect with a fetched token", standalone && { source: standalone.source, auth: standalone.auth });
  check(!p5.consoleLines.some((l) => /^error|pageerror/.test(l)), "no console errors on the standalone page", p5.consoleLines);
  await ctx4.close();

  // 7. Plain HTTP on a non-localhost name: no WebCrypto; the pure-JS HMAC signs.
  const ctx5 = await browser.newContext();
  const p6 = await newPage(ctx5);
  const insecure = tg.base.replace("127.0.0.1", "insecure.test");
  await p6.goto(insecure + "/next?insecure=1");
  check((await p6.evaluate(() => [window.isSecureContext, !!(window.crypto && window.crypto.subtle)])).join() === "false,false", "the insecure page has no crypto.subtle");
  const plain = await tg.waitFor("pageview signed without WebCrypto", (e) => e.type === "pageview" && e.source !== "server" && e.url === insecure + "/next?insecure=1");
  check(plain?.auth?.kind === "p", "signed by the pure-JS HMAC and verified", plain?.auth);
  await ctx5.close();

  // 8. Served as a file: /pixel.js and GoTrackPixel.init for pages not behind the proxy.
  const r = await fetch(tg.base + "/pixel.js");
  const etag = r.headers.get("etag");
  check(r.status === 200 && /javascript/.test(r.headers.get("content-type")) && etag, "/pixel.js served with an ETag", [r.status, etag]);
  const r304 = await fetch(tg.base + "/pixel.js", { headers: { "If-None-Match": etag } });
  check(r304.status === 304, "/pixel.js revalidates with 304", r304.status);
} finally {
  await browser.close().catch(() => undefined);
  for (const { child, dir, logPath } of procs) {
    child.kill("SIGTERM");
    await new Promise((r) => (child.exitCode !== null ? r() : child.on("exit", r)));
    // tests/browser.rs validates every event line against docs/event.schema.json.
    if (process.env.TRACKGATE_EVENTS_OUT && existsSync(logPath)) appendFileSync(process.env.TRACKGATE_EVENTS_OUT, readFileSync(logPath));
    rmSync(dir, { recursive: true, force: true });
  }
  origin.close();
}

if (failures) {
  console.error(`[browser] ${failures} check(s) failed`);
  process.exit(1);
}
log("all browser checks passed");
