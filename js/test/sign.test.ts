// The JS signer against docs/tg1-vectors.json (the same vectors the Rust
// side and an independent Python implementation pass), in both paths:
// WebCrypto (Node's) and the pure-JS fallback.
import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { createHash, createHmac, webcrypto } from "node:crypto";
import { hex, hmacSha256, sha256, utf8 } from "../src/sha256";
import { sign, signSync } from "../src/sign";

const vectors = JSON.parse(readFileSync(new URL("../../docs/tg1-vectors.json", import.meta.url), "utf8"));

const b64url = (b: Uint8Array) => Buffer.from(b).toString("base64").replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

describe("tg1 vectors", () => {
  it("has signatures to check", () => {
    expect(vectors.signatures.length).toBeGreaterThanOrEqual(5);
  });

  for (const v of vectors.signatures) {
    it(`pure-JS signer: ${v.note}`, () => {
      expect(signSync(v.token, v.body)).toBe(v.header);
    });
    it(`WebCrypto signer: ${v.note}`, async () => {
      expect(await sign(v.token, v.body, webcrypto.subtle as unknown as SubtleCrypto)).toBe(v.header);
    });
    it(`signer without crypto.subtle falls back: ${v.note}`, async () => {
      expect(await sign(v.token, v.body, null as unknown as SubtleCrypto)).toBe(v.header);
    });
  }

  // The token side (server-only in production) exercises the JS SHA-256 and
  // HMAC on more inputs: keys longer than a block, empty messages.
  for (const t of vectors.tokens) {
    it(`pure-JS SHA-256/HMAC rebuild the key: ${t.note}`, () => {
      expect(hex(sha256(utf8(t.user_agent))).slice(0, 16)).toBe(t.ua_hash);
      expect(hex(sha256(utf8(t.ip_bucket))).slice(0, 8)).toBe(t.ipb);
      const secret = t.signed_with === "secret" ? vectors.secret : vectors.previous_secret;
      const msg = `tg1.${t.kind}.${t.pageview_id}.${t.iat}.${t.ipb}.${t.ua_hash}`;
      expect(b64url(hmacSha256(utf8(secret), utf8(msg)))).toBe(t.key);
    });
  }
});

describe("pure-JS SHA-256 and HMAC match Node's", () => {
  it("at every length around the block boundaries", () => {
    for (let n = 0; n < 300; n++) {
      const msg = new Uint8Array(n).map((_, i) => (i * 7 + n) & 255);
      expect(hex(sha256(msg))).toBe(createHash("sha256").update(msg).digest("hex"));
      const key = msg.slice(0, n % 130);
      expect(hex(hmacSha256(key, msg))).toBe(createHmac("sha256", key).update(msg).digest("hex"));
    }
  });

  it("UTF-8 including astral characters and lone surrogates", () => {
    for (const s of ["", "Café ✓ 日本語", "😀", "a\ud800b", "\udfff"]) {
      expect(hex(sha256(utf8(s)))).toBe(createHash("sha256").update(Buffer.from(s, "utf8")).digest("hex"));
    }
  });
});
