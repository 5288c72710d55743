// Delivery: a queue flushed by size, timer and page hide. Signed POSTs go to
// the page's own path (stealth mode: no tracking URL for a filter list to
// match) when the collector is this origin, else to the endpoint; unload
// uses sendBeacon with `?_tg=`. 401: refresh the token once and retry.
// Network errors and 429/5xx: retry with backoff, keeping at most 100
// unsent events in sessionStorage (they survive into the tab's next page).
// The last resort is the collector's px.gif, never the origin.

import { sign, signSync } from "./sign";
import type { W } from "./signals";

export interface Config {
  endpoint: string;
  /** Default: the endpoint with `/collect` → `/px.gif` (the collector's, never the page's origin). */
  pixel?: string;
  pageview_id?: string;
  token?: string;
  expires_at?: number;
  /** `false`: always POST to the endpoint, never to the page's path. */
  stealth?: boolean;
}

export interface Ev {
  event_id: string;
  type: string;
  url: string;
  referrer?: string;
  ts: number;
  payload: Record<string, unknown>;
}

export const STORE_KEY = "_tg_q";
export const MAX_STORED = 100;
const BATCH = 20;
const MAX_FAILURES = 5;

// Module state: one tracker per page.
let w: W;
let cfg: Config;
let store: Storage | undefined;
let queue: Ev[] = [];
let base: URL;
let stealth: boolean;
let tokenUrl: string;
let pixelUrl: string;
let token: string | undefined, pv: string | undefined;
let due = 0; // Date.now() after which the token counts as stale
let until = 0; // Date.now() after which it has expired
let refreshing: Promise<void> | undefined;
let refreshTimer: ReturnType<typeof setTimeout> | undefined;
let timer: ReturnType<typeof setTimeout> | undefined;
let sending: Ev[] = []; // the batch of the POST in flight
let failures = 0;

/** Starts delivery for this page: restores the tab's unsent events, takes the config's token. */
export function init(win: W, c: Config) {
  w = win;
  cfg = c;
  queue = [];
  try {
    store = w.sessionStorage;
    queue = JSON.parse(store!.getItem(STORE_KEY) || "[]");
  } catch (e) {
    /* storage blocked, or not our JSON */
  }
  if (!Array.isArray(queue)) queue = [];
  base = new w.URL(cfg.endpoint, w.location.href);
  stealth = cfg.stealth !== false && base.origin === w.location.origin;
  tokenUrl = base.href.replace(/\/collect$/, "/hmac/public-key");
  pixelUrl = cfg.pixel || base.href.replace(/\/collect$/, "/px.gif");
  if (cfg.token) setToken(cfg.token, cfg.pageview_id, cfg.expires_at, w.performance?.timeOrigin || Date.now());
  else pv = cfg.pageview_id;
}

const target = () => (stealth ? w.location.pathname : base.href);

function save() {
  if (queue.length > MAX_STORED) queue = queue.slice(queue.length - MAX_STORED);
  try {
    queue.length ? store!.setItem(STORE_KEY, JSON.stringify(queue)) : store!.removeItem(STORE_KEY);
  } catch (e) {
    /* storage full or blocked: the queue stays in memory */
  }
}

/**
 * Takes a token; schedules its refresh a fifth of its lifetime (at most a
 * minute) before it expires. Its life is counted from `since`, a moment no
 * later than the server minted it (the navigation's start for a page's
 * token, the request's start for a fetched one), so a slow page load or
 * token fetch never makes an expired token look valid.
 */
function setToken(t: string, p: string | undefined, exp: number | undefined, since: number) {
  token = t;
  pv = p;
  const iat = +t.split(".")[3];
  const life = (exp && iat && exp > iat ? exp - iat : 1800) * 1000;
  until = since + life;
  due = until - Math.min(60000, life / 5);
  clearTimeout(refreshTimer);
  refreshTimer = w.setTimeout(() => refresh().catch(() => undefined), due - Date.now());
}

/** A kind `f` token for this pageview (or a new one) from `/hmac/public-key?pv=`. */
export function refresh(): Promise<void> {
  if (!refreshing) {
    const asked = Date.now();
    refreshing = w
      .fetch(tokenUrl + (pv ? "?pv=" + pv : ""), {
        credentials: "same-origin",
        cache: "no-store",
      })
      .then((r: Response) => {
        if (!r.ok) throw 0;
        return r.json();
      })
      .then((j: { token: string; pageview_id?: string; expires_at?: number }) => setToken(j.token, j.pageview_id || pv, j.expires_at, asked));
    const done = () => {
      refreshing = undefined;
    };
    refreshing!.then(done, done);
  }
  return refreshing!;
}

export const stale = () => !token || Date.now() >= due;

/** A signed POST to the page's path (stealth) or the endpoint. */
const send = (body: string, sig: string): Promise<Response> =>
  w.fetch(target(), {
    method: "POST",
    keepalive: body.length < 60000,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-GoTrack-HMAC": sig },
    body,
  });

async function post(batch: Ev[]): Promise<number> {
  if (stale()) await refresh();
  const body = JSON.stringify(batch);
  return (await send(body, await sign(token!, body))).status;
}

function drop(batch: Ev[]) {
  queue = queue.filter((e) => batch.indexOf(e) < 0);
  save();
}

function pixel(ev: Ev) {
  const q = (k: string, v: string | undefined) => (v ? "&" + k + "=" + encodeURIComponent(v) : "");
  const img = new w.Image(1, 1);
  img.src = pixelUrl + "?e=" + encodeURIComponent(ev.type) + q("pv", pv) + q("url", ev.url) + q("ref", ev.referrer) + "&fallback=1";
}

function schedule(ms: number) {
  if (!timer) timer = w.setTimeout(flush, ms);
}

export async function flush(): Promise<void> {
  clearTimeout(timer);
  timer = undefined;
  if (sending.length || !queue.length) return;
  const batch = (sending = queue.slice(0, BATCH));
  try {
    let status = await post(batch);
    if (status === 401) {
      await refresh();
      status = await post(batch);
    }
    if (status === 401) {
      batch.forEach(pixel);
      drop(batch);
    } else if ((status >= 200 && status < 300) || status === 400 || status === 413) {
      // Accepted, or a body the collector will never take: either way done.
      drop(batch);
      failures = 0;
    } else throw 0;
  } catch (e) {
    if (++failures > MAX_FAILURES) {
      batch.forEach(pixel);
      drop(batch);
      failures = 0;
    } else {
      sending = [];
      schedule(500 * 2 ** failures);
      return;
    }
  }
  sending = [];
  if (queue.length) return flush();
}

/** Queues an event; sends at once when `now`, or when a batch is full, else within a second. */
export function push(ev: Ev, now?: boolean) {
  queue.push(ev);
  save();
  if (now || queue.length >= BATCH) flush();
  else schedule(1000);
}

/**
 * The page is going away: beacon what is queued, a batch at a time, signed
 * synchronously; the batch of a POST in flight is left to it (keepalive
 * carries it past unload). Without a valid token, or when the browser
 * refuses a beacon (64 KiB in flight), the rest stays in sessionStorage for
 * the tab's next page.
 */
export function unload() {
  clearTimeout(timer);
  timer = undefined;
  let rest: Ev[];
  while ((rest = queue.filter((e) => sending.indexOf(e) < 0)).length && token && Date.now() < until) {
    const batch = rest.slice(0, BATCH);
    const body = JSON.stringify(batch);
    try {
      if (!w.navigator.sendBeacon(target() + "?_tg=" + signSync(token, body), body)) return;
    } catch (e) {
      return;
    }
    drop(batch);
  }
}

export const pageviewId = () => pv;
export const queued = () => queue.length;
