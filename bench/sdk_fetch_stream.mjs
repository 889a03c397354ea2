// The official SDK's side of `make bench`: reads one stream with ApiClient.fetchStream and reports
// wall time and this process's own CPU time (process.cpuUsage) per run, as one JSON line.
//
// node bench/sdk_fetch_stream.mjs <baseUrl> <token> <runId> <key> <parts> <repeats>
//
// @trigger.dev/core comes from tests/conformance/node_modules (installed by `make node-deps`).
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..");
const coreEntry = join(
  repoRoot, "tests", "conformance", "node_modules", "@trigger.dev", "core", "dist", "esm", "v3", "index.js",
);
if (!existsSync(coreEntry)) {
  console.error(`@trigger.dev/core is not installed at ${coreEntry}: run \`make node-deps\``);
  process.exit(2);
}
const { ApiClient } = await import(pathToFileURL(coreEntry).href);

const [baseUrl, token, runId, key, partsArg, repeatsArg] = process.argv.slice(2);
const expected = Number(partsArg);
const repeats = Number(repeatsArg);
const client = new ApiClient(baseUrl, token);

async function readOnce() {
  const controller = new AbortController();
  const wall0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  const stream = await client.fetchStream(runId, key, {
    signal: controller.signal,
    timeoutInSeconds: 5,
  });
  let count = 0;
  for await (const chunk of stream) {
    count += 1;
    if (count >= expected) break;
  }
  const cpu = process.cpuUsage(cpu0);
  const wall = Number(process.hrtime.bigint() - wall0) / 1e9;
  controller.abort();
  return { parts: count, wall_s: wall, cpu_s: (cpu.user + cpu.system) / 1e6 };
}

await readOnce(); // warm-up: JIT and connection set-up are not what is being compared
const runs = [];
for (let i = 0; i < repeats; i++) runs.push(await readOnce());
console.log(JSON.stringify({ runs }));
