// Delivery against a fake window: what goes where, signed how, and what
// happens on 401, network errors and unload. Timers are captured, never
// waited for.
import { beforeEach, describe, expect, it, vi } from "vitest";
import { signSync } from "../src/sign";
import type { Ev } from "../src/transport";

type T = typeof import("../src/transport");
const TOKEN = "tg1.p.01942c8a-4e00-7a3b-9c1d-2e3f4a5b6c7d.1767225600.94c6699e.kB_2vMt25fiEpBAaBuvSYqZcXcIIYkaeNKy04J6oeMM";
const PV = "01942c8a-4e00-7a3b-9c1d-2e3f4a5b6c7d";
const FRESH = "tg1.f.01942c8a-4e00-7a3b-9c1d-2e3f4a5b6c7d.1767226000.94c6699e.wf3f3M_qDlepNevCgUYqqv3MhjZNx3F8HWRAjg8WiQE";

interface Call {
  url: string;
  init: RequestInit & { headers?: Record<string, string> };
}

function fakeWindow(reply: (c: Call) => Promise<{ status: number; body?: unknown }>, href = "https://shop.example/p/1?q=2") {
  const u = new URL(href);
  const calls: Call[] = [];
  const timers: { f: () => void; ms: number }[] = [];
  const beacons: { url: string; body: string }[] = [];
  const pixels: string[] = [];
  const store = new Map<string, string>();
  const w = {
    location: { href, origin: u.origin, pathname: u.pathname },
    URL,
    fetch: (url: string, init: Call["init"]) => {
      const c = { url, init };
      calls.push(c);
      return reply(c).then((r) => ({ status: r.status, ok: r.status < 300, json: async () => r.body }));
    },
    setTimeout: (f: () => void, ms: number) => timers.push({ f, ms }),
    navigator: { sendBeacon: (url: string, body: string) => (beacons.push({ url, body }), true) },
    Image: class {
      set src(v: string) {
        pixels.push(v);
      }
    },
    sessionStorage: {
      getItem: (k: string) => store.get(k) ?? null,
      setItem: (k: string, v: string) => store.set(k, v),
      removeItem: (k: string) => store.delete(k),
    },
  };
  return { w, calls, timers, beacons, pixels, store };
}

const ev = (type: string, i = 0): Ev => ({ event_id: `e${i}`, type, url: "https://shop.example/p/1?q=2", ts: 1, payload: { i } });
const tokenReply = (c: Call) =>
  c.url.includes("/hmac/public-key")
    ? Promise.resolve({ status: 200, body: { token: FRESH, pageview_id: PV, expires_at: 1767227800 } })
    : undefined;

let t: T;
beforeEach(async () => {
  vi.resetModules();
  t = await import("../src/transport");
});

const settle = () => new Promise((r) => setTimeout(r, 20));

describe("sending", () => {
  it("POSTs to the page's own path (stealth) with a valid X-GoTrack-HMAC", async () => {
    const f = fakeWindow(async () => ({ status: 202 }));
    t.init(f.w, { endpoint: "/collect", pixel: "/px.gif", token: TOKEN, pageview_id: PV, expires_at: 1767227400 });
    t.push(ev("pageview"), true);
    await settle();
    expect(f.calls).toHaveLength(1);
    const c = f.calls[0];
    expect(c.url).toBe("/p/1");
    expect(c.init.method).toBe("POST");
    expect(c.init.keepalive).toBe(true);
    expect(c.init.headers!["X-GoTrack-HMAC"]).toBe(signSync(TOKEN, c.init.body as string));
    expect(JSON.parse(c.init.body as string)).toEqual([ev("pageview")]);
    expect(t.queued()).toBe(0);
    expect(f.store.size).toBe(0);
  });

  it("POSTs to a collector on another origin at its endpoint, not the page's path", async () => {
    const f = fakeWindow(async () => ({ status: 202 }));
    t.init(f.w, { endpoint: "https://t.example/_t/collect", pixel: "https://t.example/_t/px.gif", token: TOKEN, expires_at: 1767227400 });
    t.push(ev("pageview"), true);
    await settle();
    expect(f.calls[0].url).toBe("https://t.example/_t/collect");
  });

  it("batches: one event waits for a 1 s timer; pageviews go at once", async () => {
    const f = fakeWindow(async () => ({ status: 202 }));
    t.init(f.w, { endpoint: "/collect", pixel: "/px.gif", token: TOKEN, expires_at: 1767227400 });
    const refreshTimer = f.timers.length;
    t.push(ev("click"));
    await settle();
    expect(f.calls).toHaveLength(0);
    expect(f.timers[refreshTimer].ms).toBe(1000);
    t.push(ev("click", 1));
    f.timers[refreshTimer].f();
    await settle();
    expect(f.calls).toHaveLength(1);
    expect(JSON.parse(f.calls[0].init.body as string)).toHaveLength(2);
  });

  it("without a token, fetches one (and the pageview id) from /hmac/public-key first", async () => {
    const f = fakeWindow((c) => tokenReply(c) ?? Promise.resolve({ status: 202 }));
    t.init(f.w, { endpoint: "/_t/collect", pixel: "/_t/px.gif" });
    t.push(ev("pageview"), true);
    await settle();
    expect(f.calls.map((c) => c.url)).toEqual(["https://shop.example/_t/hmac/public-key", "/p/1"]);
    expect(f.calls[1].init.headers!["X-GoTrack-HMAC"]).toBe(signSync(FRESH, f.calls[1].init.body as string));
    expect(t.pageviewId()).toBe(PV);
  });

  it("schedules the token refresh a fifth of its life (at most 60 s) before expiry", () => {
    const f = fakeWindow(async () => ({ status: 202 }));
    const now = Date.now();
    vi.spyOn(Date, "now").mockReturnValue(now);
    t.init(f.w, { endpoint: "/collect", pixel: "/px.gif", token: TOKEN, expires_at: 1767225600 + 1800 });
    expect(f.timers.map((x) => x.ms)).toEqual([1740_000]);
    vi.restoreAllMocks();
  });

  it("counts a page token's life from the navigation's start, not from when the script ran", () => {
    const f = fakeWindow(async () => ({ status: 202 }));
    const now = Date.now();
    vi.spyOn(Date, "now").mockReturnValue(now);
    (f.w as Record<string, unknown>).performance = { timeOrigin: now - 5000 };
    t.init(f.w, { endpoint: "/collect", pixel: "/px.gif", token: TOKEN, expires_at: 1767225600 + 1800 });
    expect(f.timers.map((x) => x.ms)).toEqual([1735_000]);
    vi.spyOn(Date, "now").mockReturnValue(now + 1735_000);
    expect(t.stale()).toBe(true);
    vi.restoreAllMocks();
  });
});

describe("failures", () => {
  it("401: refreshes the token once for this pageview and resends", async () => {
    let posts = 0;
    const f = fakeWindow((c) => tokenReply(c) ?? Promise.resolve({ status: ++posts === 1 ? 401 : 202 }));
    t.init(f.w, { endpoint: "/collect", pixel: "/px.gif", token: TOKEN, pageview_id: PV, expires_at: 1767227400 });
    t.push(ev("pageview"), true);
    await settle();
    expect(f.calls.map((c) => c.url)).toEqual(["/p/1", `https://shop.example/hmac/public-key?pv=${PV}`, "/p/1"]);
    const last = f.calls[2];
    expect(last.init.headers!["X-GoTrack-HMAC"]).toBe(signSync(FRESH, last.init.body as string));
    expect(t.queued()).toBe(0);
    expect(f.pixels).toEqual([]);
  });

  it("401 twice: the collector's px.gif, never the origin, then the events are dropped", async () => {
    const f = fakeWindow((c) => tokenReply(c) ?? Promise.resolve({ status: 401 }));
    t.init(f.w, { endpoint: "https://t.example/collect", pixel: "https://t.example/px.gif", token: TOKEN, pageview_id: PV, expires_at: 1767227400 });
    t.push(ev("pageview"), true);
    await settle();
    expect(f.calls.filter((c) => c.url.endsWith("/collect"))).toHaveLength(2);
    expect(f.pixels).toHaveLength(1);
    expect(f.pixels[0]).toMatch(/^https:\/\/t\.example\/px\.gif\?e=pageview&pv=01942c8a-[^&]+&url=https%3A%2F%2Fshop\.example%2Fp%2F1%3Fq%3D2&fallback=1$/);
    expect(t.queued()).toBe(0);
  });

  it("network errors and 5xx: back off 1, 2, 4, 8, 16 s keeping events in sessionStorage, then px.gif", async () => {
    const f = fakeWindow(() => Promise.reject(new TypeError("offline")));
    t.init(f.w, { endpoint: "/collect", pixel: "/px.gif", token: TOKEN, expires_at: 1767227400 });
    const base = f.timers.length;
    t.push(ev("pageview"), true);
    await settle();
    expect(JSON.parse(f.store.get("_tg_q")!)).toHaveLength(1);
    for (let i = 0; i < 5; i++) {
      expect(f.timers[base + i].ms).toBe(1000 * 2 ** i);
      f.timers[base + i].f();
      await settle();
    }
    expect(f.calls).toHaveLength(6);
    expect(f.pixels).toHaveLength(1);
    expect(f.store.has("_tg_q")).toBe(false);
  });

  it("GoTrack's init({endpoint}): the fallback pixel is the collector's, derived from the endpoint", async () => {
    const f = fakeWindow((c) => tokenReply(c) ?? Promise.resolve({ status: 401 }));
    t.init(f.w, { endpoint: "https://collector.example/t/collect" });
    t.push(ev("pageview"), true);
    await settle();
    expect(f.pixels).toHaveLength(1);
    expect(f.pixels[0].startsWith("https://collector.example/t/px.gif?e=pageview&pv=")).toBe(true);
  });

  it("400 and 413 drop the batch (the collector will never take it)", async () => {
    for (const status of [400, 413]) {
      vi.resetModules();
      t = await import("../src/transport");
      const f = fakeWindow(async () => ({ status }));
      t.init(f.w, { endpoint: "/collect", pixel: "/px.gif", token: TOKEN, expires_at: 1767227400 });
      t.push(ev("pageview"), true);
      await settle();
      expect(t.queued()).toBe(0);
      expect(f.pixels).toEqual([]);
    }
  });

  it("keeps at most 100 unsent events, the newest, and restores them on the tab's next page", async () => {
    const f = fakeWindow(() => new Promise(() => undefined)); // never answers
    t.init(f.w, { endpoint: "/collect", pixel: "/px.gif", token: TOKEN, expires_at: 1767227400 });
    for (let i = 0; i < 130; i++) t.push(ev("click", i));
    const kept = JSON.parse(f.store.get("_tg_q")!);
    expect(kept).toHaveLength(100);
    expect(kept[0].event_id).toBe("e30");
    vi.resetModules();
    const next = await import("../src/transport");
    next.init(f.w, { endpoint: "/collect", pixel: "/px.gif", token: TOKEN, expires_at: 1767227400 });
    expect(next.queued()).toBe(100);
  });
});

describe("unload", () => {
  it("beacons the queue to the page's path with ?_tg=<signature of the body>", async () => {
    const f = fakeWindow(() => new Promise(() => undefined));
    // 25 events left unsent by the tab's previous page.
    f.store.set("_tg_q", JSON.stringify(Array.from({ length: 25 }, (_, i) => ev("click", i))));
    t.init(f.w, { endpoint: "/collect", pixel: "/px.gif", token: TOKEN, expires_at: 1767227400 });
    expect(t.queued()).toBe(25);
    t.unload();
    expect(f.calls).toHaveLength(0);
    expect(f.beacons).toHaveLength(2); // batches of 20
    for (const b of f.beacons) {
      expect(b.url).toBe("/p/1?_tg=" + signSync(TOKEN, b.body));
    }
    expect(JSON.parse(f.beacons[1].body)).toHaveLength(5);
    expect(t.queued()).toBe(0);
    expect(f.store.has("_tg_q")).toBe(false);
  });

  it("never beacons with an expired token: the events stay for the tab's next page", async () => {
    const f = fakeWindow(() => new Promise(() => undefined));
    const now = Date.now();
    vi.spyOn(Date, "now").mockReturnValue(now);
    t.init(f.w, { endpoint: "/collect", pixel: "/px.gif", token: TOKEN, expires_at: 1767225600 + 1800 });
    t.push(ev("engagement"));
    vi.spyOn(Date, "now").mockReturnValue(now + 1800_000);
    t.unload();
    expect(f.beacons).toEqual([]);
    expect(JSON.parse(f.store.get("_tg_q")!)).toHaveLength(1);
    vi.restoreAllMocks();
  });

  it("leaves the batch of a POST in flight to that POST", async () => {
    const f = fakeWindow(() => new Promise(() => undefined));
    t.init(f.w, { endpoint: "/collect", pixel: "/px.gif", token: TOKEN, expires_at: 1767227400 });
    t.push(ev("pageview", 0), true);
    await settle();
    expect(f.calls).toHaveLength(1);
    t.push(ev("engagement", 1));
    t.unload();
    expect(f.beacons.map((b) => JSON.parse(b.body).map((e: Ev) => e.event_id))).toEqual([["e1"]]);
    expect(t.queued()).toBe(1); // the pageview, until its POST answers
  });

  it("keeps what the browser refuses to beacon", async () => {
    const f = fakeWindow(() => new Promise(() => undefined));
    f.w.navigator.sendBeacon = () => false;
    t.init(f.w, { endpoint: "/collect", pixel: "/px.gif", token: TOKEN, expires_at: 1767227400 });
    t.push(ev("engagement"));
    t.unload();
    expect(t.queued()).toBe(1);
  });
});
