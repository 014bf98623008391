// Parses an AsyncAPI document with the reference parser (@asyncapi/parser) and prints one JSON
// line: every diagnostic (severity 0 error, 1 warning, 2 information, 3 hint) and, when the
// document parsed, what the parser's model holds (channel addresses, operations, messages).
// Usage: node validate.mjs path/to/asyncapi.json
import { readFile } from "node:fs/promises";
import { Parser } from "@asyncapi/parser";

const path = process.argv[2];
if (!path) {
  console.error("usage: node validate.mjs path/to/asyncapi.json");
  process.exit(2);
}
const text = await readFile(path, "utf8");
const { document, diagnostics } = await new Parser().parse(text, { source: path });
const report = {
  parsed: document !== undefined,
  version: document?.version(),
  diagnostics: diagnostics.map((d) => ({
    severity: d.severity,
    code: String(d.code),
    message: d.message,
    path: d.path.join("/"),
  })),
  channels: document ? document.channels().all().map((c) => c.address()) : [],
  operations: document
    ? document.operations().all().map((o) => ({ id: o.id(), action: o.action() }))
    : [],
  messages: document ? document.components().messages().all().map((m) => m.id()) : [],
};
console.log(JSON.stringify(report));
