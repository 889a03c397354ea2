// Resuming a stream: ApiClient.fetchStream with `lastEventId`, and the SDK's `streams.read` with
// `startIndex` (which it turns into Last-Event-ID = startIndex - 1). Writes the parts first
// (appendToStream for one key, pipe for another), then reads the same stream several ways.
// Input: {runId, appendKey, pipeKey, parts: [string...], resumeAfter: k, startIndex: n}.
import { StandardRealtimeStreamsManager } from "@trigger.dev/core/v3/workers";
import { configure, streams } from "@trigger.dev/sdk";
import { apiUrl, clientWith, main, outcome, readStream, secretKey } from "./lib.mjs";

async function readWithStreamsRead(runId, key, startIndex) {
  try {
    const chunks = [];
    const stream = await streams.read(runId, key, { startIndex, timeoutInSeconds: 1 });
    for await (const chunk of stream) {
      chunks.push(chunk);
    }
    return { ok: true, chunks };
  } catch (error) {
    return { ok: false, error: String(error) };
  }
}

async function resumeReads(client, runId, key, resumeAfter, startIndex) {
  const full = await readStream(client, runId, key);
  if (!full.ok || full.parts.length <= resumeAfter) {
    return { full };
  }
  const ids = full.parts.map((p) => p.id);
  const [byLastEventId, byLastEventIdAtEnd, byStartIndexHeader, byStreamsRead, byStreamsReadZero] =
    await Promise.all([
      readStream(client, runId, key, { lastEventId: ids[resumeAfter] }),
      readStream(client, runId, key, { lastEventId: ids[ids.length - 1] }),
      // Exactly what streams.read / useRealtimeStream send for startIndex (§2.6).
      readStream(client, runId, key, { lastEventId: String(startIndex - 1) }),
      readWithStreamsRead(runId, key, startIndex),
      readWithStreamsRead(runId, key, 0),
    ]);
  return {
    full,
    byLastEventId,
    byLastEventIdAtEnd,
    byStartIndexHeader,
    byStreamsRead,
    byStreamsReadZero,
  };
}

await main(async ({ runId, appendKey, pipeKey, parts, resumeAfter, startIndex }) => {
  configure({ baseURL: apiUrl(), accessToken: secretKey() });
  const client = clientWith(secretKey());
  for (const part of parts) {
    await client.appendToStream(runId, "self", appendKey, part);
  }
  const manager = new StandardRealtimeStreamsManager(client, apiUrl());
  async function* source() {
    yield* parts;
  }
  const piped = await outcome(manager.pipe(pipeKey, source(), { target: runId }).wait());
  const [append, pipe] = await Promise.all([
    resumeReads(client, runId, appendKey, resumeAfter, startIndex),
    resumeReads(client, runId, pipeKey, resumeAfter, startIndex),
  ]);
  return { piped, append, pipe };
});
