// trackgate's browser tracker. Config: the injected `trackgate-config` JSON
// block, else `window.trackgateToken` (set by /hmac.js), else
// `GoTrackPixel.init(cfg)`, else defaults next to the script's own URL (the
// token then comes from /hmac/public-key). Events: `pageview` on load and on
// SPA navigations, `engagement` when the page is hidden or left,
// `trackgate.track(name, props)`, clicks on `[data-tg-event]` elements.

import { detect, device, noInput, verdict, type W } from "./signals";
import * as t from "./transport";
import type { Config, Ev } from "./transport";

const w = window as W;
const doc = document;
const script = doc.currentScript as HTMLScriptElement | null;

/** A random (version 4) UUID. */
const uuid = (): string =>
  "10000000-1000-4000-8000-100000000000".replace(/[018]/g, (c) =>
    (+c ^ (w.crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (+c / 4)))).toString(16),
  );

/** The collect endpoint: next to this script's URL when loaded as /…/pixel*.js, else at this origin's root. */
function defaults(): Config {
  const m = script && /(.*)\/pixel[\w.-]*\.js/.exec(script.src);
  return { endpoint: (m ? m[1] : "") + "/collect" };
}

function readConfig(): Config | undefined {
  try {
    return JSON.parse(doc.getElementById("trackgate-config")!.textContent!);
  } catch (e) {
    /* no block, or a broken one: fall through */
  }
  // /hmac.js: {token, expires_at, pageview_id, ...}
  const tok = w.trackgateToken;
  return tok?.token ? Object.assign(defaults(), tok) : undefined;
}

let started = 0;
let inputs = 0;

function event(type: string, payload: Record<string, unknown>, referrer?: string): Ev {
  return { event_id: uuid(), type, url: location.href, referrer: referrer || doc.referrer || undefined, ts: Date.now(), payload };
}

function track(name: string, props?: Record<string, unknown>): void {
  if (started && name) t.push(event(String(name), props ? { props } : {}));
}

function start(cfg: Config): void {
  // One tracker per page, even when both injected and loaded as /pixel.js.
  if (w.__trackgate) return;
  w.__trackgate = started = 1;
  t.init(w, cfg);
  const on = (target: EventTarget, name: string, f: (e: Event) => void) =>
    target.addEventListener(name, f, { capture: true, passive: true });

  // Engagement: visible time, deepest scroll, input counts.
  let since = doc.visibilityState === "visible" ? Date.now() : 0;
  const eng = { visible_ms: 0, scroll_max_pct: 0, pointer: 0, key: 0, touch: 0 };
  let reported = false;
  const depth = () => {
    const h = doc.documentElement.scrollHeight;
    const pct = h ? Math.min(100, Math.round(((w.scrollY + w.innerHeight) / h) * 100)) : 100;
    if (pct > eng.scroll_max_pct) eng.scroll_max_pct = pct;
  };
  on(w, "scroll", depth);
  for (const k of ["pointerdown", "keydown", "touchstart"])
    on(doc, k, () => (eng[k.replace(/down|start/, "") as "key"]++, inputs++));
  const leave = (trigger: string) => {
    if (since) eng.visible_ms += Date.now() - since;
    since = 0;
    if (!reported) {
      reported = true;
      depth();
      t.push(event("engagement", Object.assign({ trigger }, eng)));
    }
    t.unload();
  };
  on(doc, "visibilitychange", () => {
    if (doc.visibilityState === "hidden") leave("hidden");
    else {
      since = Date.now();
      reported = false;
      if (t.stale()) t.refresh().catch(() => undefined);
    }
  });
  on(w, "pagehide", () => leave("pagehide"));

  // Clicks on elements marked data-tg-event="name" (data-tg-* become props).
  on(doc, "click", (e) => {
    const el = e.target instanceof Element ? e.target.closest("[data-tg-event]") : null;
    if (!el) return;
    // data-tg-plan="pro" → props.plan
    const props: Record<string, string> = {};
    for (const [k, v] of Object.entries((el as HTMLElement).dataset))
      if (/^tg./.test(k) && k != "tgEvent") props[k[2].toLowerCase() + k.slice(3)] = v!;
    t.push(event(el.getAttribute("data-tg-event") || "click", { props, client: verdict([noInput(e.isTrusted, inputs)]) }));
  });

  // SPA navigations: pushState / replaceState / popstate with a new URL.
  let last = location.href;
  const nav = (how: string) => {
    const from = last;
    if (location.href === from) return;
    last = location.href;
    t.push(event("pageview", { spa: how }, from), true);
  };
  for (const k of ["pushState", "replaceState"] as const) {
    const orig = history[k];
    history[k] = function (this: History, ...args: Parameters<History["pushState"]>) {
      const r = orig.apply(this, args);
      nav(k);
      return r;
    };
  }
  on(w, "popstate", () => nav("popstate"));

  const pageview = (client?: object) => t.push(event("pageview", { title: doc.title, client }), true);
  detect(w).then((v) => pageview(Object.assign({ device: device(w) }, v)), () => pageview());
}

const api = {
  init(cfg?: Partial<Config>) {
    start(Object.assign(readConfig() || defaults(), cfg || {}));
    return api;
  },
  track,
  flush: () => started && t.flush(),
  pageviewId: () => started && t.pageviewId(),
  queued: () => started && t.queued(),
};
w.trackgate = w.trackgate || api;
w.GoTrackPixel = w.GoTrackPixel || api;

const cfg = readConfig();
if (cfg) start(cfg);
else {
  // A plain <script src=".../pixel.js">: give a following inline
  // GoTrackPixel.init(cfg) the chance to run first.
  const later = () => start(defaults());
  if (doc.readyState === "loading") doc.addEventListener("DOMContentLoaded", later);
  else setTimeout(later, 0);
}
