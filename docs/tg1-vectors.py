#!/usr/bin/env python3
"""Independent Python implementation of tg1 (stdlib only); generates docs/tg1-vectors.json.

Usage: python3 docs/tg1-vectors.py OUT.json   (tests/vectors.rs checks the output equals the
committed file, so the vectors never come from the Rust code alone)."""
import base64, hashlib, hmac, ipaddress, json, re, sys

SECRET = "tg1-vectors-current-secret-2026"
PREVIOUS = "tg1-vectors-previous-secret-2025"
STRANGER = "some-secret-trackgate-never-had"
TTL = 1800
SKEW = 60

def canonical(ip):
    a = ipaddress.ip_address(ip)
    if a.version == 6 and a.ipv4_mapped is not None:
        return a.ipv4_mapped
    return a

def ip_bucket(ip):
    a = canonical(ip)
    if a.version == 4:
        return str(ipaddress.ip_network(f"{a}/24", strict=False))
    net = ipaddress.ip_network(f"{a}/48", strict=False)
    return f"{net.network_address}/48"

def ipb(ip):
    return hashlib.sha256(ip_bucket(ip).encode()).hexdigest()[:8]

def ua_hash(ua):
    return hashlib.sha256(ua.encode()).hexdigest()[:16]

def key(secret, kind, pv, iat, ipb_, uah):
    msg = f"tg1.{kind}.{pv}.{iat}.{ipb_}.{uah}".encode()
    mac = hmac.new(secret.encode(), msg, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

def mint(secret, kind, pv, iat, ip, ua):
    b = ipb(ip)
    return f"tg1.{kind}.{pv}.{iat}.{b}." + key(secret, kind, pv, iat, b, ua_hash(ua))

def sign(token, body):
    head, k = token.rsplit(".", 1)
    assert len(k) == 43
    return head + "." + hmac.new(k.encode(), body.encode(), hashlib.sha256).hexdigest()

TOKEN_RE = re.compile(
    r"tg1\.([pf])\.([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    r"\.([0-9]{1,20})\.([0-9a-f]{8})\.([0-9a-fA-F]{64})")

def verify(header, body, ua, ip, now, secrets):
    if header == "":
        return {"verdict": "missing"}
    m = TOKEN_RE.fullmatch(header)
    if not m or int(m.group(3)) >= 2**64:
        return {"verdict": "malformed"}
    kind, pv, iat, tipb, mac = m.groups()
    pv, iat = pv.lower(), int(iat)
    if iat > now + SKEW:
        return {"verdict": "not_yet_valid"}
    if max(now - iat, 0) > TTL:
        return {"verdict": "expired"}
    for i, s in enumerate(secrets):
        k = key(s, kind, pv, iat, tipb, ua_hash(ua))
        exp = hmac.new(k.encode(), body.encode(), hashlib.sha256).digest()
        if hmac.compare_digest(exp, bytes.fromhex(mac)):
            return {"verdict": "ok", "ip_changed": tipb != ipb(ip), "previous_secret": i == 1}
    return {"verdict": "bad_signature"}

UA_CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
UA_FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
UA_SAFARI = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
IAT = 1767225600  # 2026-01-01T00:00:00Z

token_cases = [
    # (note, secret name, kind, pv, iat, ip, ua)
    ("page token, IPv4", "secret", "p", "01942c8a-4e00-7a3b-9c1d-2e3f4a5b6c7d", IAT, "203.0.113.77", UA_CHROME),
    ("fetched token, IPv6 (bucket is the /48)", "secret", "f", "01942c8a-4e01-7b2c-8d3e-4f5a6b7c8d9e", IAT + 17, "2001:db8:1:2::3", UA_FIREFOX),
    ("page token, IPv4-mapped IPv6 (bucketed as IPv4)", "secret", "p", "01942c8a-4e02-7c3d-a4e5-f60718293a4b", IAT + 42, "::ffff:198.51.100.23", UA_SAFARI),
    ("fetched token, empty User-Agent", "secret", "f", "01942c8a-4e03-7d4e-b5f6-0718293a4b5c", IAT + 99, "192.0.2.1", ""),
    ("page token, IPv6 whose /48 compresses to 2001::", "secret", "p", "01942c8a-4e04-7e5f-86a7-b8c9dae0f102", IAT + 120, "2001:0:0:ffff::1", UA_FIREFOX),
    ("page token minted with the previous secret (during a rotation)", "previous_secret", "p", "01942c8a-4e05-7f60-97b8-c9daebfc0d1e", IAT + 5, "203.0.113.200", UA_CHROME),
]
secrets = {"secret": SECRET, "previous_secret": PREVIOUS, "stranger": STRANGER}

tokens = []
for note, sname, kind, pv, iat, ip, ua in token_cases:
    t = mint(secrets[sname], kind, pv, iat, ip, ua)
    b = ipb(ip)
    tokens.append({
        "note": note, "signed_with": sname, "kind": kind, "pageview_id": pv, "iat": iat,
        "ip": ip, "user_agent": ua, "ip_bucket": ip_bucket(ip), "ipb": b,
        "ua_hash": ua_hash(ua), "key": t.rsplit(".", 1)[1], "token": t,
    })

T = [t["token"] for t in tokens]
BODY = '{"type":"pageview","url":"https://shop.example/","ts":1767225601}'
bodies = [
    ("empty body", T[0], ""),
    ("JSON body", T[0], BODY),
    ("non-ASCII body (UTF-8 bytes are MACed)", T[1], '{"type":"click","label":"Café ✓ 日本語"}'),
    ("body with newline, empty User-Agent token", T[3], '{"type":"scroll","depth":75}\n'),
    ("IPv4-mapped token", T[2], BODY),
    ("token minted with the previous secret", T[5], BODY),
]
signatures = [{"note": n, "token": t, "body": b, "header": sign(t, b)} for n, t, b in bodies]

H = lambda i: signatures[i]["header"]
stranger_token = mint(STRANGER, "p", "01942c8a-4e06-7071-a8c9-dae0f1021324", IAT, "203.0.113.77", UA_CHROME)
stranger_header = sign(stranger_token, BODY)
h1 = H(1)
head1, mac1 = h1.rsplit(".", 1)
f1 = h1.split(".")
ver_cases = [
    # (note, header, body, ua, ip, now, expected verdict)
    ("ok: same IP, 10 s later", h1, BODY, UA_CHROME, "203.0.113.77", IAT + 10, "ok"),
    ("ok: same /24, other host", h1, BODY, UA_CHROME, "203.0.113.5", IAT + 10, "ok"),
    ("ok but ip_changed: another network", h1, BODY, UA_CHROME, "198.51.100.9", IAT + 10, "ok"),
    ("ok: empty body", H(0), "", UA_CHROME, "203.0.113.77", IAT, "ok"),
    ("ok: non-ASCII body, IPv6 same /48", H(2), signatures[2]["body"], UA_FIREFOX, "2001:db8:1:ffff::1", IAT + 20, "ok"),
    ("ok but ip_changed: IPv6 client now on IPv4", H(2), signatures[2]["body"], UA_FIREFOX, "192.0.2.50", IAT + 20, "ok"),
    ("ok: empty User-Agent", H(3), signatures[3]["body"], "", "192.0.2.1", IAT + 100, "ok"),
    ("ok: mapped token, request from the plain IPv4 address", H(4), BODY, UA_SAFARI, "198.51.100.23", IAT + 50, "ok"),
    ("ok: MAC in uppercase hex", head1 + "." + mac1.upper(), BODY, UA_CHROME, "203.0.113.77", IAT + 10, "ok"),
    ("ok: previous secret still accepted", H(5), BODY, UA_CHROME, "203.0.113.200", IAT + 10, "ok"),
    ("ok: age == ttl_s (boundary)", h1, BODY, UA_CHROME, "203.0.113.77", IAT + TTL, "ok"),
    ("expired: age == ttl_s + 1", h1, BODY, UA_CHROME, "203.0.113.77", IAT + TTL + 1, "expired"),
    ("ok: iat == now + 60 (clock skew allowance)", h1, BODY, UA_CHROME, "203.0.113.77", IAT - 60, "ok"),
    ("not yet valid: iat == now + 61", h1, BODY, UA_CHROME, "203.0.113.77", IAT - 61, "not_yet_valid"),
    ("bad signature: other User-Agent", h1, BODY, UA_FIREFOX, "203.0.113.77", IAT + 10, "bad_signature"),
    ("bad signature: tampered body", h1, BODY.replace("pageview", "purchase"), UA_CHROME, "203.0.113.77", IAT + 10, "bad_signature"),
    ("bad signature: body signed for another token", head1 + "." + H(0).rsplit(".", 1)[1], BODY, UA_CHROME, "203.0.113.77", IAT + 10, "bad_signature"),
    ("bad signature: iat field changed", h1.replace(f".{IAT}.", f".{IAT + 1}."), BODY, UA_CHROME, "203.0.113.77", IAT + 10, "bad_signature"),
    ("bad signature: ipb field rewritten to the new network", h1.replace("." + f1[4] + ".", "." + ipb("198.51.100.9") + "."), BODY, UA_CHROME, "198.51.100.9", IAT + 10, "bad_signature"),
    ("bad signature: secret trackgate never had", stranger_header, BODY, UA_CHROME, "203.0.113.77", IAT + 10, "bad_signature"),
    ("missing: empty value", "", BODY, UA_CHROME, "203.0.113.77", IAT + 10, "missing"),
    ("malformed: key sent instead of a MAC", T[0], BODY, UA_CHROME, "203.0.113.77", IAT + 10, "malformed"),
    ("malformed: five fields", ".".join(f1[:5]), BODY, UA_CHROME, "203.0.113.77", IAT + 10, "malformed"),
    ("malformed: seven fields", h1 + ".00", BODY, UA_CHROME, "203.0.113.77", IAT + 10, "malformed"),
    ("malformed: prefix tg2", "tg2" + h1[3:], BODY, UA_CHROME, "203.0.113.77", IAT + 10, "malformed"),
    ("malformed: unknown kind", h1.replace("tg1.p.", "tg1.x.", 1), BODY, UA_CHROME, "203.0.113.77", IAT + 10, "malformed"),
    ("malformed: pageview id without hyphens", h1.replace(f1[2], f1[2].replace("-", "")), BODY, UA_CHROME, "203.0.113.77", IAT + 10, "malformed"),
    ("malformed: signed iat", h1.replace(f".{IAT}.", f".+{IAT}."), BODY, UA_CHROME, "203.0.113.77", IAT + 10, "malformed"),
    ("malformed: iat overflows 64 bits", h1.replace(f".{IAT}.", ".18446744073709551616."), BODY, UA_CHROME, "203.0.113.77", IAT + 10, "malformed"),
    ("malformed: uppercase ipb", h1.replace("." + f1[4] + ".", "." + f1[4].upper() + "."), BODY, UA_CHROME, "203.0.113.77", IAT + 10, "malformed"),
    ("malformed: MAC one digit short", h1[:-1], BODY, UA_CHROME, "203.0.113.77", IAT + 10, "malformed"),
    ("malformed: MAC not hex", head1 + ".z" + mac1[1:], BODY, UA_CHROME, "203.0.113.77", IAT + 10, "malformed"),
]
if any(c.isalpha() for c in f1[4]) is False:
    sys.exit("pick another IP: ipb of token 0 has no letter, uppercase case is moot")

verifications = []
for note, header, body, ua, ip, now, expect in ver_cases:
    r = verify(header, body, ua, ip, now, [SECRET, PREVIOUS])
    if r["verdict"] != expect:
        sys.exit(f"python verdict {r} != intended {expect} for {note}")
    e = {"note": note, "header": header, "body": body, "user_agent": ua, "ip": ip, "now": now}
    e.update(r)
    verifications.append(e)

assert any(v.get("ip_changed") for v in verifications)
assert any(v.get("previous_secret") for v in verifications)

doc = {
    "description": [
        "Test vectors for tg1 tokens (trackgate). All hashes are SHA-256, all MACs HMAC-SHA256.",
        "Minted token: tg1.<kind>.<pageview_id>.<iat>.<ipb>.<key>",
        "  kind: 'p' (minted into a served page) or 'f' (fetched from /hmac/public-key or /hmac.js)",
        "  pageview_id: UUID, 36-char lowercase hyphenated; iat: unix seconds in decimal",
        "  ip_bucket: IPv4 -> 'a.b.c.0/24'; IPv6 -> the /48 network in RFC 5952 text + '/48'; ::ffff:a.b.c.d counts as IPv4",
        "  ipb: lowercase hex of the first 4 bytes of SHA-256(ip_bucket)",
        "  ua_hash: lowercase hex of the first 8 bytes of SHA-256(User-Agent bytes); the User-Agent may be empty",
        "  key: base64url without padding (43 chars) of HMAC(secret, 'tg1.<kind>.<pageview_id>.<iat>.<ipb>.' + ua_hash)",
        "Client signing: replace the key field with lowercase hex of HMAC(key as its 43 ASCII bytes, exact body bytes);",
        "  send it as header 'X-GoTrack-HMAC: <value>' or query parameter '_tg=<value>'.",
        "Verification: exactly 6 fields, prefix tg1, kind p|f, UUID (either hex case), 1-20 digits, ipb 8 lowercase hex,",
        "  MAC 64 hex (either case), else 'malformed'; empty value 'missing'; iat > now + max_skew_s 'not_yet_valid';",
        "  now - iat > ttl_s 'expired'; then the key is rebuilt from the token's fields (its own ipb) and the request's",
        "  User-Agent with secret, then previous_secret; no constant-time MAC match is 'bad_signature'.",
        "  On 'ok', ip_changed = (token ipb != ipb of the request ip); previous_secret = only the previous secret matched.",
        "Strings are UTF-8; bodies and User-Agents are MACed as their UTF-8 bytes.",
    ],
    "secret": SECRET,
    "previous_secret": PREVIOUS,
    "ttl_s": TTL,
    "max_skew_s": SKEW,
    "tokens": tokens,
    "signatures": signatures,
    "verifications": verifications,
}
with open(sys.argv[1], "w", encoding="utf-8") as f:
    json.dump(doc, f, ensure_ascii=False, indent=2)
    f.write("\n")
print(f"{len(tokens)} tokens, {len(signatures)} signatures, {len(verifications)} verifications")
