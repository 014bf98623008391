// Copies the pinned @stomp/stompjs browser bundle and its licence into the gateway's static
// folder, with a manifest (name, version, sha256) that the gateway's tests check.
// Run after `npm ci`: `npm run vendor`.
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const pkgDir = join(here, "node_modules", "@stomp", "stompjs");
const outDir = join(here, "..", "services", "gateway", "src", "gateway", "static", "vendor");

const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
const pinned = JSON.parse(readFileSync(join(here, "package.json"), "utf8")).dependencies[pkg.name];
if (pinned !== pkg.version) {
  console.error(`installed ${pkg.name} ${pkg.version} but package.json pins ${pinned}; run npm ci`);
  process.exit(1);
}

mkdirSync(outDir, { recursive: true });
const bundle = "stomp.umd.min.js";
copyFileSync(join(pkgDir, "bundles", bundle), join(outDir, bundle));
copyFileSync(join(pkgDir, "LICENSE"), join(outDir, "stompjs.LICENSE.txt"));
const sha256 = createHash("sha256").update(readFileSync(join(outDir, bundle))).digest("hex");
const manifest = {
  name: pkg.name,
  version: pkg.version,
  license: pkg.license,
  file: bundle,
  licenseFile: "stompjs.LICENSE.txt",
  sha256,
  source: `npm ${pkg.name}@${pkg.version}, bundles/${bundle}`,
};
writeFileSync(join(outDir, "stompjs.json"), JSON.stringify(manifest, null, 2) + "\n");
console.log(`vendored ${pkg.name} ${pkg.version} (${sha256.slice(0, 12)}...) into ${outDir}`);
