// Writes streams with the SDK's writers, then reads every one back with ApiClient.fetchStream.
// Used for the payload checks (unicode, 100 KB parts, 10,000 parts); pytest holds the expected
// values and compares. Input: {runId, writes: [{key, via: "pipe" | "append", parts: [...]}]}.
// `append` parts must be strings (appendToStream sends the raw text as the body).
import { StandardRealtimeStreamsManager } from "@trigger.dev/core/v3/workers";
import { apiUrl, clientWith, main, outcome, readStream, secretKey } from "./lib.mjs";

async function write(client, manager, runId, { key, via, parts }) {
  if (via === "pipe") {
    async function* source() {
      yield* parts;
    }
    return outcome(manager.pipe(key, source(), { target: runId }).wait());
  }
  if (via === "append") {
    for (const part of parts) {
      const result = await outcome(client.appendToStream(runId, "self", key, part));
      if (!result.ok) {
        return result;
      }
    }
    return { ok: true };
  }
  throw new Error(`unknown writer ${JSON.stringify(via)}: expected "pipe" or "append"`);
}

await main(async ({ runId, token, writes }) => {
  const client = clientWith(secretKey());
  const manager = new StandardRealtimeStreamsManager(client, apiUrl());
  const written = await Promise.all(writes.map((spec) => write(client, manager, runId, spec)));
  const reader = clientWith(token ?? secretKey());
  const reads = await Promise.all(writes.map(({ key }) => readStream(reader, runId, key)));
  return {
    writes: writes.map(({ key, via }, index) => ({ key, via, result: written[index] })),
    reads: Object.fromEntries(writes.map(({ key }, index) => [key, reads[index]])),
  };
});
