// The size budget of the committed bundle (the bytes every page carries).
import { expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const bundle = readFileSync(new URL("../dist/tracker.min.js", import.meta.url));

it("is at most 12 KiB minified and 5 KiB gzipped (level 9)", () => {
  expect(bundle.length).toBeLessThanOrEqual(12 * 1024);
  expect(gzipSync(bundle, { level: 9 }).length).toBeLessThanOrEqual(5 * 1024);
});

it("is one IIFE that can sit inline in a <script> element", () => {
  const text = bundle.toString("utf8");
  expect(text.startsWith("(()=>{")).toBe(true);
  expect(text.trimEnd().endsWith("})();")).toBe(true);
  expect(text).not.toContain("</");
  expect(text).not.toContain("<!--");
  // No eval-like constructs a strict CSP would block.
  expect(text).not.toMatch(/\beval\(|new Function\(|setTimeout\("/);
});
