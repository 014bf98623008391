// Copies the pinned browser bundles (@stomp/stompjs, sockjs-client) and their licences into the
// gateway's static folder, each with a manifest (name, version, sha256) that the gateway's
// tests check. Run after `npm ci`: `npm run vendor`.
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const outDir = join(here, "..", "services", "gateway", "src", "gateway", "static", "vendor");
const pinnedVersions = JSON.parse(readFileSync(join(here, "package.json"), "utf8")).dependencies;

// What each package gives the browser: its own prebuilt bundle, byte for byte.
const bundles = [
  { pkg: "@stomp/stompjs", from: "bundles/stomp.umd.min.js", licence: "LICENSE", stem: "stompjs" },
  { pkg: "sockjs-client", from: "dist/sockjs.min.js", licence: "LICENSE", stem: "sockjs" },
];

mkdirSync(outDir, { recursive: true });
let failed = false;
for (const { pkg: name, from, licence, stem } of bundles) {
  const pkgDir = join(here, "node_modules", ...name.split("/"));
  const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
  if (pinnedVersions[pkg.name] !== pkg.version) {
    console.error(
      `installed ${pkg.name} ${pkg.version} but package.json pins ${pinnedVersions[pkg.name]}; run npm ci`,
    );
    failed = true;
    continue;
  }
  const file = from.split("/").pop();
  const licenseFile = `${stem}.LICENSE.txt`;
  copyFileSync(join(pkgDir, from), join(outDir, file));
  copyFileSync(join(pkgDir, licence), join(outDir, licenseFile));
  const sha256 = createHash("sha256").update(readFileSync(join(outDir, file))).digest("hex");
  const manifest = {
    name: pkg.name,
    version: pkg.version,
    license: pkg.license,
    file,
    licenseFile,
    sha256,
    source: `npm ${pkg.name}@${pkg.version}, ${from}`,
  };
  writeFileSync(join(outDir, `${stem}.json`), JSON.stringify(manifest, null, 2) + "\n");
  console.log(`vendored ${pkg.name} ${pkg.version} (${sha256.slice(0, 12)}...) into ${outDir}`);
}
if (failed) process.exit(1);
