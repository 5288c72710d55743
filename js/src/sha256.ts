// Pure-JS SHA-256 and HMAC-SHA256, for pages without WebCrypto (plain-HTTP
// origins other than localhost) and for signing synchronously while the page
// is being unloaded (a WebCrypto promise may never settle there).

// First 32 bits of the fractional parts of the square roots (H0) and cube
// roots (K) of the first 8 / 64 primes (FIPS 180-4).
const K: number[] = [];
const H0: number[] = [];
for (let n = 2; K.length < 64; n++) {
  let prime = 1;
  for (let d = 2; d * d <= n; d++) if (n % d == 0) prime = 0;
  if (prime) {
    if (H0.length < 8) H0.push((n ** 0.5 % 1) * 2 ** 32 | 0);
    K.push((n ** (1 / 3) % 1) * 2 ** 32 | 0);
  }
}

/** UTF-8 bytes of a string (lone surrogates become U+FFFD). */
export const utf8 = (s: string): Uint8Array<ArrayBuffer> => new TextEncoder().encode(s);

const rotr = (x: number, n: number) => (x >>> n) | (x << (32 - n));

/** SHA-256 of `msg`. */
export function sha256(msg: Uint8Array): Uint8Array<ArrayBuffer> {
  const len = msg.length;
  const total = ((len + 72) >> 6) << 6;
  const buf = new Uint8Array(total);
  buf.set(msg);
  buf[len] = 0x80;
  const dv = new DataView(buf.buffer);
  dv.setUint32(total - 8, len / 2 ** 29);
  dv.setUint32(total - 4, len << 3);
  const h = H0.slice();
  const w: number[] = [];
  for (let off = 0; off < total; off += 64) {
    const v = h.slice();
    for (let i = 0; i < 64; i++) {
      if (i < 16) w[i] = dv.getInt32(off + i * 4);
      else {
        const a = w[i - 15], b = w[i - 2];
        w[i] = (w[i - 16] + (rotr(a, 7) ^ rotr(a, 18) ^ (a >>> 3)) + w[i - 7] + (rotr(b, 17) ^ rotr(b, 19) ^ (b >>> 10))) | 0;
      }
      const [a, b, c, , e, f, g, hh] = v;
      const t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
      const t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      v.pop();
      v.unshift((t1 + t2) | 0);
      v[4] = (v[4] + t1) | 0;
    }
    for (let i = 0; i < 8; i++) h[i] = (h[i] + v[i]) | 0;
  }
  const out = new Uint8Array(32);
  h.forEach((x, i) => new DataView(out.buffer).setInt32(i * 4, x));
  return out;
}

/** HMAC-SHA256 (RFC 2104). */
export function hmacSha256(key: Uint8Array, msg: Uint8Array): Uint8Array<ArrayBuffer> {
  if (key.length > 64) key = sha256(key);
  const ipad = new Uint8Array(64 + msg.length);
  const opad = new Uint8Array(96);
  for (let i = 0; i < 64; i++) {
    ipad[i] = key[i] ^ 0x36;
    opad[i] = key[i] ^ 0x5c;
  }
  ipad.set(msg, 64);
  opad.set(sha256(ipad), 64);
  return sha256(opad);
}

export const hex = (b: Uint8Array): string => Array.from(b, (x) => (x + 256).toString(16).slice(1)).join("");
