// The detectors against browser profiles: current desktop Chrome (Windows,
// macOS, Linux), Firefox, Safari, mobile Chrome and Safari with default
// settings score 0; headless/automated profiles are flagged with reasons.
import { describe, expect, it } from "vitest";
import { detect, device, noInput, verdict, type W } from "../src/signals";

const native = Math.max; // prints as [native code]
const query = (state: string) => Promise.resolve.bind(Promise, { state }) as unknown as () => Promise<{ state: string }>;

function gl(vendor: string, renderer: string, debugExt = true) {
  return {
    getContext: () => ({
      VENDOR: 1,
      RENDERER: 2,
      getExtension: (n: string) =>
        n === "WEBGL_debug_renderer_info" && debugExt ? { UNMASKED_VENDOR_WEBGL: 3, UNMASKED_RENDERER_WEBGL: 4 } : null,
      getParameter: (p: number) => (p === 1 || p === 3 ? vendor : renderer),
    }),
  };
}

interface Profile {
  ua: string;
  platform: string;
  ch?: { brands: { brand: string; version: string }[]; mobile: boolean; platform: string };
  plugins: number;
  renderer: [string, string];
  notification?: string;
  permission?: string;
}

function win(p: Profile, extra: Record<string, unknown> = {}, nav: Record<string, unknown> = {}): W {
  return {
    navigator: {
      userAgent: p.ua,
      platform: p.platform,
      languages: ["en-US", "en"],
      webdriver: false,
      plugins: { length: p.plugins },
      mimeTypes: { length: p.plugins ? 2 : 0 },
      userAgentData: p.ch,
      permissions: { query: query(p.permission || "prompt") },
      hardwareConcurrency: 8,
      ...nav,
    },
    screen: { width: 1920, height: 1080, availWidth: 1920, availHeight: 1040, colorDepth: 24 },
    document: { createElement: () => gl(...p.renderer) },
    Notification: { permission: p.notification || "default" },
    outerWidth: 1280,
    outerHeight: 800,
    innerWidth: 1280,
    innerHeight: 700,
    devicePixelRatio: 1,
    Function,
    Date,
    ...extra,
  };
}

const chromeBrands = (v: string) => [
  { brand: "Google Chrome", version: v },
  { brand: "Chromium", version: v },
  { brand: "Not_A Brand", version: "24" },
];

const CLEAN: Record<string, Profile> = {
  "Chrome 131, Windows, ANGLE Direct3D": {
    ua: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    platform: "Win32",
    ch: { brands: chromeBrands("131"), mobile: false, platform: "Windows" },
    plugins: 5,
    renderer: ["Google Inc. (Intel)", "ANGLE (Intel, Intel(R) UHD Graphics 620 Direct3D11 vs_5_0 ps_5_0, D3D11)"],
  },
  "Chrome 131, macOS, ANGLE Metal": {
    ua: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    platform: "MacIntel",
    ch: { brands: chromeBrands("131"), mobile: false, platform: "macOS" },
    plugins: 5,
    renderer: ["Google Inc. (Apple)", "ANGLE (Apple, ANGLE Metal Renderer: Apple M1, Unspecified Version)"],
  },
  "Chrome 131, Linux, Mesa hardware driver": {
    ua: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    platform: "Linux x86_64",
    ch: { brands: chromeBrands("131"), mobile: false, platform: "Linux" },
    plugins: 5,
    renderer: ["Google Inc. (Intel)", "ANGLE (Intel, Mesa Intel(R) UHD Graphics 620 (KBL GT2), OpenGL 4.6)"],
  },
  "Firefox 133, Linux": {
    ua: "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    platform: "Linux x86_64",
    plugins: 5,
    renderer: ["Mozilla", "Mozilla"],
  },
  "Firefox 133, Windows": {
    ua: "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    platform: "Win32",
    plugins: 5,
    renderer: ["Mozilla", "Mozilla"],
  },
  "Safari 18, macOS": {
    ua: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    platform: "MacIntel",
    plugins: 5,
    renderer: ["Apple Inc.", "Apple GPU"],
  },
  "Safari 18, iPhone": {
    ua: "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    platform: "iPhone",
    plugins: 0,
    renderer: ["Apple Inc.", "Apple GPU"],
  },
  "Chrome 131, Android (no plugins)": {
    ua: "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    platform: "Linux armv81",
    ch: { brands: chromeBrands("131"), mobile: true, platform: "Android" },
    plugins: 0,
    renderer: ["Qualcomm", "Adreno (TM) 640"],
  },
  "Chrome with notifications blocked by the user": {
    ua: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    platform: "Win32",
    ch: { brands: chromeBrands("131"), mobile: false, platform: "Windows" },
    plugins: 5,
    renderer: ["Google Inc. (NVIDIA)", "ANGLE (NVIDIA, NVIDIA GeForce RTX 3060 Direct3D11 vs_5_0 ps_5_0, D3D11)"],
    notification: "denied",
    permission: "denied",
  },
};

describe("ordinary browsers score 0", () => {
  for (const [name, p] of Object.entries(CLEAN)) {
    it(name, async () => {
      const v = await detect(win(p));
      expect(v.reasons).toEqual([]);
      expect(v.score).toBe(0);
      expect(v.verdict).toBe("clean");
      expect(v.detectors.length).toBe(10);
      for (const d of v.detectors) {
        expect(typeof d.id).toBe("string");
        expect(d.score).toBe(0);
        expect(typeof d.details).toBe("object");
      }
    });
  }
  it("a window without WebGL, Permissions, Notification or client hints", async () => {
    const p = CLEAN["Firefox 133, Linux"];
    const w = win(p, { Notification: undefined, document: { createElement: () => ({ getContext: () => null }) } }, { permissions: undefined });
    const v = await detect(w);
    expect(v.score).toBe(0);
    expect(v.detectors.find((d) => d.id === "software_webgl")!.details).toEqual({ available: false });
  });
});

const chrome = CLEAN["Chrome 131, Linux, Mesa hardware driver"];

describe("each detector fires on its signal, with details", () => {
  const fired = async (w: W, id: string) => {
    const v = await detect(w);
    const d = v.detectors.find((x) => x.id === id)!;
    expect(v.reasons).toContain(id);
    expect(d.score).toBeGreaterThan(0);
    expect(v.score).toBe(v.detectors.reduce((a, x) => a + x.score, 0));
    return d;
  };
  it("navigator.webdriver", async () => {
    await fired(win(chrome, {}, { webdriver: true }), "webdriver");
  });
  it("automation globals (ChromeDriver, Playwright, Puppeteer, PhantomJS, Nightmare, Selenium)", async () => {
    for (const g of ["cdc_adoQpoasnfa76pfcZLmcfl_Array", "__playwright__binding__", "__puppeteer_evaluation_script__", "callPhantom", "__nightmare", "_selenium", "__webdriver_evaluate"]) {
      const d = await fired(win(chrome, { [g]: 1 }), "automation_globals");
      expect(d.details.found).toEqual([g]);
    }
    const d = await fired(win(chrome, { document: { $cdc_asdjflasutopfhvcZLmcfl_: 1, createElement: () => gl("a", "b") } }), "automation_globals");
    expect(d.details.found).toEqual(["document.$cdc_asdjflasutopfhvcZLmcfl_"]);
  });
  it("ordinary globals such as window.phantom (a wallet) or window.emit are not automation", async () => {
    expect((await detect(win(chrome, { phantom: {}, emit: () => 1, spawn: 1 }))).score).toBe(0);
  });
  it("HeadlessChrome in the UA or in client-hint brands", async () => {
    const ua = chrome.ua.replace("Chrome/", "HeadlessChrome/");
    await fired(win({ ...chrome, ua }), "headless_ua");
    const ch = { brands: [{ brand: "HeadlessChrome", version: "131" }, { brand: "Chromium", version: "131" }], mobile: false, platform: "Linux" };
    await fired(win({ ...chrome, ch }), "headless_ua");
  });
  it("no plugins on desktop Chrome", async () => {
    const d = await fired(win({ ...chrome, plugins: 0 }), "no_plugins");
    expect(d.details).toEqual({ plugins: 0, mime_types: 0 });
  });
  it("empty navigator.languages", async () => {
    await fired(win(chrome, {}, { languages: [] }), "empty_languages");
  });
  it("software WebGL: SwiftShader, llvmpipe", async () => {
    for (const r of ["ANGLE (Google, Vulkan 1.3.0 (SwiftShader Device (Subzero) (0x0000C0DE)), SwiftShader driver)", "llvmpipe (LLVM 15.0.6, 256 bits)"]) {
      const d = await fired(win({ ...chrome, renderer: ["Google Inc.", r] }), "software_webgl");
      expect(d.details.renderer).toBe(r);
    }
  });
  it("Notification.permission denied while permissions.query says prompt", async () => {
    await fired(win({ ...chrome, notification: "denied", permission: "prompt" }), "notification_permission");
  });
  it("zero outer window size", async () => {
    await fired(win(chrome, { outerWidth: 0, outerHeight: 0 }), "zero_outer_size");
  });
  it("UA vs platform vs client hints", async () => {
    let d = await fired(win({ ...chrome, platform: "Win32" }), "ua_mismatch");
    expect(d.details.issues).toEqual(["platform"]);
    d = await fired(win({ ...chrome, ch: { ...chrome.ch!, platform: "Windows" } }), "ua_mismatch");
    expect(d.details.issues).toEqual(["ch_platform"]);
    d = await fired(win({ ...chrome, ch: { ...chrome.ch!, brands: chromeBrands("120") } }), "ua_mismatch");
    expect(d.details.issues).toEqual(["ch_version"]);
    const ff = CLEAN["Firefox 133, Linux"];
    d = await fired(win({ ...ff, ch: chrome.ch }), "ua_mismatch");
    expect(d.details.issues).toEqual(["ch_on_non_chromium"]);
  });
  it("Function.prototype.toString tampering of native functions", async () => {
    const d = await fired(win(chrome, {}, { permissions: { query: async () => ({ state: "prompt" }) } }), "native_tampering");
    expect(d.details.tampered).toEqual(["query"]);
    class Navigator {}
    Object.defineProperty(Navigator.prototype, "webdriver", { get: () => false });
    const nav = new Navigator();
    for (const [k, v] of Object.entries(win(chrome).navigator)) if (k !== "webdriver") Object.defineProperty(nav, k, { value: v });
    const d2 = await fired({ ...win(chrome), Navigator, navigator: nav }, "native_tampering");
    expect(d2.details.tampered).toContain("get");
    expect((d2.details.tampered as string[]).some((t) => t.startsWith("own:"))).toBe(true);
  });
  it("a detector that throws scores 0 and says why", async () => {
    const v = await detect(win(chrome, { document: { createElement: () => { throw new Error("boom"); } } }));
    expect(v.detectors.find((d) => d.id === "software_webgl")).toEqual({ id: "software_webgl", score: 0, details: { error: "Error: boom" } });
  });
});

describe("verdicts", () => {
  it("sums scores into clean / suspect / bot", () => {
    const d = (id: string, score: number) => ({ id, score, details: {} });
    expect(verdict([d("a", 0)])).toMatchObject({ score: 0, verdict: "clean", reasons: [] });
    expect(verdict([d("a", 20), d("b", 0)])).toMatchObject({ score: 20, verdict: "suspect", reasons: ["a"] });
    expect(verdict([d("a", 20), d("b", 30)])).toMatchObject({ score: 50, verdict: "bot", reasons: ["a", "b"] });
  });
  it("the interaction gate: untrusted events, or none of pointer/key/touch before", () => {
    expect(noInput(true, 3).score).toBe(0);
    expect(noInput(false, 3).score).toBe(30);
    expect(noInput(true, 0).score).toBe(30);
  });
  it("a headless profile is a bot", async () => {
    const ua = chrome.ua.replace("Chrome/", "HeadlessChrome/");
    const v = await detect(win({ ...chrome, ua, renderer: ["Google Inc.", "SwiftShader"] }, {}, { webdriver: true }));
    expect(v.verdict).toBe("bot");
    expect(v.reasons).toEqual(["webdriver", "headless_ua", "software_webgl"]);
  });
});

describe("device signals", () => {
  it("reports what the browser says, without identifiers", () => {
    const d = device(win(chrome, { sessionStorage: { setItem() {}, removeItem() {} } }, { cookieEnabled: true, deviceMemory: 8, maxTouchPoints: 0, connection: { type: "wifi", effectiveType: "4g" } }));
    expect(d).toMatchObject({
      screen: { w: 1920, h: 1080, aw: 1920, ah: 1040 },
      viewport: { w: 1280, h: 700 },
      dpr: 1,
      color_depth: 24,
      languages: ["en-US", "en"],
      platform: "Linux x86_64",
      ua_ch: { mobile: false, platform: "Linux" },
      cores: 8,
      memory: 8,
      touch_points: 0,
      cookies: true,
      storage: { local: false, session: true },
      connection: { type: "wifi", effective: "4g" },
    });
    expect(typeof d.tz).toBe("string");
    expect(typeof d.tz_offset).toBe("number");
  });
});
