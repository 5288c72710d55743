// tg1 request signing (docs/tg1-vectors.json): the token's last field is a
// key; the presented value replaces it with the lowercase hex
// HMAC-SHA256(key as ASCII, exact UTF-8 body bytes). The server rebuilds the
// key from the other fields and the request's User-Agent (src/track/token.rs).

import { hex, hmacSha256, utf8 } from "./sha256";

/** `[prefix up to and including the last '.', key]`. */
function split(token: string): [string, string] {
  const i = token.lastIndexOf(".");
  return [token.slice(0, i + 1), token.slice(i + 1)];
}

/** Signs synchronously with the pure-JS HMAC. */
export function signSync(token: string, body: string): string {
  const [prefix, key] = split(token);
  return prefix + hex(hmacSha256(utf8(key), utf8(body)));
}

/** Signs with WebCrypto when the page has it (secure contexts), else in JS. */
export async function sign(token: string, body: string, s: SubtleCrypto | undefined = globalThis.crypto?.subtle): Promise<string> {
  if (!s) return signSync(token, body);
  const [prefix, key] = split(token);
  try {
    const k = await s.importKey("raw", utf8(key), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    return prefix + hex(new Uint8Array(await s.sign("HMAC", k, utf8(body))));
  } catch (e) {
    return signSync(token, body);
  }
}
