// Bundle GraphiQL, React, graphql-ws and Monaco's workers into content-hashed
// files the server ships as package data, plus manifest.json (which files the
// page loads) and THIRD_PARTY_LICENSES (the licence of every npm package that
// has code in a bundle).
//
// Run by scripts/build-playground after `npm ci`:  node build.mjs OUTDIR
import { build } from "esbuild";
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const outdir = resolve(process.argv[2] ?? join(here, "dist"));

// graphiql/style.css already carries Monaco's whole stylesheet; the CSS files
// Monaco's modules import one by one would only load twice (and esbuild cannot
// attach CSS to lazily loaded chunks), so they become empty.
const monacoCssOnce = {
  name: "monaco-css-once",
  setup(b) {
    b.onLoad({ filter: /node_modules\/monaco-editor\/.*\.css$/ }, () => ({ contents: "", loader: "empty" }));
  },
};

const common = {
  absWorkingDir: here,
  bundle: true,
  minify: true,
  legalComments: "none", // every licence is in THIRD_PARTY_LICENSES instead
  metafile: true,
  target: ["es2022"],
  define: { "process.env.NODE_ENV": '"production"' },
  logLevel: "warning",
  loader: { ".ttf": "file" },
  assetNames: "[name]-[hash]",
  entryNames: "[name]-[hash]",
  outdir,
};

// Monaco runs its language services in web workers: one classic script each.
const workers = {
  editor: "monaco-editor/esm/vs/editor/editor.worker.js",
  json: "monaco-editor/esm/vs/language/json/json.worker.js",
  graphql: "monaco-graphql/esm/graphql.worker.js",
};

rmSync(outdir, { recursive: true, force: true });
mkdirSync(outdir, { recursive: true });

const page = await build({
  ...common,
  entryPoints: { playground: "src/main.js" },
  format: "esm",
  splitting: true,
  chunkNames: "chunk-[hash]",
  plugins: [monacoCssOnce],
});
const workerBuilds = {};
for (const [label, entry] of Object.entries(workers)) {
  workerBuilds[label] = await build({
    ...common,
    entryPoints: { [`${label}.worker`]: entry },
    format: "iife",
  });
}

const outputs = (result) => Object.keys(result.metafile.outputs).map((file) => basename(file));
const pageFiles = outputs(page);
const styles = pageFiles.filter((f) => f.endsWith(".css"));
const script = pageFiles.find((f) => f.startsWith("playground-") && f.endsWith(".js"));
if (!script || styles.length !== 1) {
  throw new Error(`expected one entry script and one stylesheet, got ${pageFiles.join(", ")}`);
}
const manifest = {
  script,
  style: styles[0],
  workers: Object.fromEntries(
    Object.entries(workerBuilds).map(([label, result]) => [
      label,
      outputs(result).find((f) => f.endsWith(".js")),
    ]),
  ),
};
writeFileSync(join(outdir, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);

// Packages that ship no licence file of their own, and where their text is:
// the same repository's licence (a monorepo sibling), as their package.json says.
const licenceFrom = {
  "@graphiql/plugin-doc-explorer": "graphiql",
  "@graphiql/plugin-history": "graphiql",
  "react-compiler-runtime": "react",
  "react-remove-scroll-bar": "react-remove-scroll",
};
const licenceName = /^(licen[cs]e|copying|notice)([-.][a-z0-9.]+)?$/i;

function licenceTexts(name) {
  const dir = join(here, "node_modules", licenceFrom[name] ?? name);
  const files = readdirSync(dir).filter((f) => licenceName.test(f)).sort();
  return files.map((f) => readFileSync(join(dir, f), "utf8").trim());
}

const packages = new Set();
for (const result of [page, ...Object.values(workerBuilds)]) {
  for (const [input, meta] of Object.entries(result.metafile.inputs)) {
    const match = input.match(/^node_modules\/((?:@[^/]+\/)?[^/]+)\//);
    if (match && meta.bytes > 0) packages.add(match[1]);
  }
}
const sections = [
  "Third-party software in the meshsub-trio GraphiQL playground",
  "(bundled by scripts/build-playground from scripts/playground/package-lock.json)",
  "",
];
for (const name of [...packages].sort()) {
  const meta = JSON.parse(readFileSync(join(here, "node_modules", name, "package.json"), "utf8"));
  const texts = licenceTexts(name);
  if (!texts.length) throw new Error(`${name}@${meta.version}: no licence text found`);
  const source = licenceFrom[name] ? ` (licence text from ${licenceFrom[name]}, same repository)` : "";
  sections.push("=".repeat(78), `${name}@${meta.version}: ${meta.license}${source}`, "=".repeat(78));
  sections.push("", ...texts, "");
}
writeFileSync(join(outdir, "THIRD_PARTY_LICENSES"), sections.join("\n"));

console.log(`playground: ${readdirSync(outdir).length} files, ${packages.size} npm packages`);
