// Builds the chart bundle into the Python package: `make dashboard` runs
// this after `npm ci`. The output (and uPlot's license) is committed, so a
// checkout or a pip install needs no node.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";

const out = "../manta/_private/head/http/static/vendor";
mkdirSync(out, { recursive: true });
const version = JSON.parse(readFileSync("node_modules/uplot/package.json", "utf8")).version;
await build({
  entryPoints: ["src/charts.js"],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  outfile: `${out}/charts.js`,
  legalComments: "none",
  banner: { js: `/* uPlot ${version} (MIT, see uPlot.LICENSE), bundled by dashboard/build.mjs */` },
  logLevel: "info",
});
copyFileSync("node_modules/uplot/LICENSE", `${out}/uPlot.LICENSE`);
