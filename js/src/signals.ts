// Device signals and automation detectors, sent with their details under
// `payload.client`. Bot detection, not ad tech: no canvas or audio hashes,
// no identifiers. Each detector is `{id, score, details}`; a score of 0 means
// "nothing found" (a detector that throws scores 0 and says so in
// `details.error`). js/README.md documents each one's false-positive risk.

export interface Detector {
  id: string;
  score: number;
  details: Record<string, unknown>;
}

export interface Verdict {
  score: number;
  verdict: "clean" | "suspect" | "bot";
  reasons: string[];
  detectors: Detector[];
}

// A loose view of `window`: tests pass plain objects, and any property may
// be missing in some browser.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type W = any;
type Details = Record<string, unknown>;

/** Runs one detector: `f` returns `[fired, details]`; `score` counts when fired. */
function run(id: string, score: number, f: () => [unknown, Details]): Detector {
  try {
    const [hit, details] = f();
    return { id, score: hit ? score : 0, details };
  } catch (e) {
    return { id, score: 0, details: { error: e + "" } };
  }
}

/** Device signals: what the browser says about itself. */
export function device(w: W): Details {
  const n = w.navigator;
  const s = w.screen;
  const ua = n.userAgentData;
  const c = n.connection;
  const storage = (k: string) => {
    try {
      w[k].setItem("_tg", "1");
      w[k].removeItem("_tg");
      return true;
    } catch (e) {
      return false;
    }
  };
  let tz;
  try {
    tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
  } catch (e) {
    /* no Intl */
  }
  return {
    screen: { w: s?.width, h: s?.height, aw: s?.availWidth, ah: s?.availHeight },
    viewport: { w: w.innerWidth, h: w.innerHeight },
    dpr: w.devicePixelRatio,
    color_depth: s?.colorDepth,
    tz,
    tz_offset: new Date().getTimezoneOffset(),
    languages: n.languages && [...n.languages],
    platform: n.platform,
    ua_ch: ua && { brands: ua.brands, mobile: ua.mobile, platform: ua.platform },
    cores: n.hardwareConcurrency,
    memory: n.deviceMemory,
    touch_points: n.maxTouchPoints,
    cookies: n.cookieEnabled,
    storage: { local: storage("localStorage"), session: storage("sessionStorage") },
    connection: c && { type: c.type, effective: c.effectiveType },
  };
}

const GLOBALS =
  /^(\$?cdc_|\$wdc_|_?_selenium|callSelenium|_Selenium_IDE|__(webdriver|fxdriver|driver_|playwright|pw|puppeteer|nightmare|lastWatirAlert)|domAutomation|puppeteer_|callPhantom|_phantom)/;

/** Automation globals left by ChromeDriver, Selenium, Playwright, Puppeteer, PhantomJS, Nightmare. */
export const automationGlobals = (w: W) =>
  run("automation_globals", 50, () => {
    const found: string[] = [];
    for (const [o, at] of [[w, ""], [w.document, "document."]])
      if (o) for (const k of Object.getOwnPropertyNames(o)) if (GLOBALS.test(k)) found.push(at + k);
    return [found.length, { found: found.slice(0, 10) }];
  });

// [os as client hints name it, User-Agent test, navigator.platform test]
const OS: [string, RegExp, RegExp][] = [
  ["Windows", /Windows/, /^Win/],
  ["Android", /Android/, /Linux|Android|^$/],
  ["iOS", /iPhone|iPad|iPod/, /iPhone|iPad|iPod|MacIntel/],
  ["macOS", /Macintosh|Mac OS X/, /^Mac/],
  ["Chrome OS", /CrOS/, /Linux|CrOS/],
  ["Linux", /Linux|X11/, /Linux|X11/],
];

/** User-Agent vs `navigator.platform` vs client hints. */
export const uaMismatch = (w: W) =>
  run("ua_mismatch", 30, () => {
    const n = w.navigator;
    const ua: string = n.userAgent || "";
    const os = OS.find((o) => o[1].test(ua));
    const issues: string[] = [];
    const p: string = n.platform || "";
    if (os && p && !os[2].test(p)) issues.push("platform");
    const ch = n.userAgentData;
    if (ch) {
      if (os && ch.platform && ch.platform !== os[0]) issues.push("ch_platform");
      const brands: { brand: string; version: string }[] = ch.brands || [];
      const chromium = brands.find((b) => /^(Chromium|Google Chrome)$/.test(b.brand));
      const m = /Chrome\/(\d+)/.exec(ua);
      if (!m) issues.push("ch_on_non_chromium");
      else if (brands.length && !chromium) issues.push("ch_brands");
      else if (chromium && chromium.version !== m[1]) issues.push("ch_version");
    }
    return [issues.length, { os: os?.[0], platform: p, issues }];
  });

/** The WebGL renderer: software rasterisers are what headless browsers and VMs use. */
export const webgl = (w: W) =>
  run("software_webgl", 20, () => {
    const gl = w.document.createElement("canvas").getContext("webgl");
    if (!gl) return [0, { available: false }];
    const ext = gl.getExtension("WEBGL_debug_renderer_info");
    const vendor = String(gl.getParameter(ext ? ext.UNMASKED_VENDOR_WEBGL : gl.VENDOR));
    const renderer = String(gl.getParameter(ext ? ext.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
    gl.getExtension("WEBGL_lose_context")?.loseContext();
    return [/SwiftShader|llvmpipe|softpipe|Software Rasterizer|Microsoft Basic Render/i.test(renderer), { vendor, renderer }];
  });

/** Native functions that no longer print as native: patched by an automation "stealth" layer. */
export const nativeTampering = (w: W) =>
  run("native_tampering", 40, () => {
    const fts = w.Function.prototype.toString;
    const nav = w.Navigator?.prototype;
    const getter = (k: string) => nav && Object.getOwnPropertyDescriptor(nav, k)?.get;
    // Reported by name: "toString", "query", "get webdriver", ...
    const tampered = [
      fts,
      w.navigator.permissions?.query,
      w.HTMLCanvasElement?.prototype.toDataURL,
      w.WebGLRenderingContext?.prototype.getParameter,
      getter("webdriver"),
      getter("languages"),
      getter("plugins"),
      w.Date.prototype.getTimezoneOffset,
    ]
      .filter((f) => typeof f == "function" && !/\[native code\]\s*\}\s*$/.test(fts.call(f)))
      .map((f) => f.name);
    // Chrome, Firefox and Safari keep no own properties on `navigator`.
    const own = Object.getOwnPropertyNames(w.navigator);
    if (own.length && nav) tampered.push("own:" + own.slice(0, 5));
    return [tampered.length, { tampered }];
  });

/** Every detector that needs no user interaction, summed. */
export async function detect(w: W): Promise<Verdict> {
  const n = w.navigator;
  const ua: string = n.userAgent || "";
  let query: string | undefined;
  try {
    query = (await n.permissions.query({ name: "notifications" })).state;
  } catch (e) {
    /* no Permissions API, or no notifications in it */
  }
  const list: Detector[] = [
    run("webdriver", 50, () => [n.webdriver === true, { webdriver: n.webdriver }]),
    automationGlobals(w),
    run("headless_ua", 50, () => {
      const brands = (n.userAgentData?.brands || []).map((b: { brand: string }) => b.brand);
      const hit = /HeadlessChrome/.test(ua + brands);
      return [hit, { ua: /HeadlessChrome/.test(ua) }];
    }),
    run("no_plugins", 20, () => {
      const plugins = n.plugins?.length, mime_types = n.mimeTypes?.length;
      const desktopChrome = /Chrome\//.test(ua) && !/Mobi|Android|Edg\/|OPR\//.test(ua);
      return [desktopChrome && (!plugins || !mime_types), { plugins, mime_types }];
    }),
    run("empty_languages", 20, () => [!n.languages?.length, { count: n.languages?.length }]),
    webgl(w),
    // Notification.permission "denied" while the Permissions API says "prompt": headless Chrome.
    run("notification_permission", 30, () => {
      const permission = w.Notification?.permission;
      return [permission == "denied" && query == "prompt", { permission, query }];
    }),
    run("zero_outer_size", 30, () => [!w.outerWidth && !w.outerHeight, { w: w.outerWidth, h: w.outerHeight }]),
    uaMismatch(w),
    nativeTampering(w),
  ];
  return verdict(list);
}

/** The summed score, the verdict and the ids of the detectors that fired. */
export function verdict(detectors: Detector[]): Verdict {
  const hits = detectors.filter((x) => x.score > 0);
  const score = hits.reduce((a, x) => a + x.score, 0);
  return { score, verdict: score >= 50 ? "bot" : score ? "suspect" : "clean", reasons: hits.map((x) => x.id), detectors };
}

/**
 * The interaction-gated check, for events a person causes (clicks on
 * `data-tg-event` elements): an untrusted (script-dispatched) event, or no
 * pointer, key or touch input at all before it.
 */
export const noInput = (trusted: boolean, inputs: number) =>
  run("no_input_before_interaction", 30, () => [!trusted || !inputs, { trusted, inputs }]);
