// StandardRealtimeStreamsManager.pipe (PUT + chunked NDJSON POST) and ApiClient.appendToStream
// write parts that ApiClient.fetchStream reads back identical, in order, and LIVE: the reader is
// started before the writer, and the writer does not produce its second part until the reader
// (in this same process) has received the first one. A buffering server therefore deadlocks
// here and the script reports a timeout instead of passing.
// Input: {runId, token, pipeKey, appendKey, pipeParts: [...], appendParts: [string...]}.
import { StandardRealtimeStreamsManager } from "@trigger.dev/core/v3/workers";
import { apiUrl, clientWith, main, outcome, readStream, secretKey, withTimeout } from "./lib.mjs";

const LIVE_WAIT_MS = 10_000;

function firstPartSignal() {
  let resolve;
  const promise = new Promise((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

async function pipeLive(writerClient, readerClient, runId, key, parts) {
  const firstPart = firstPartSignal();
  const timeline = [];
  const reading = readStream(readerClient, runId, key, {
    timeoutInSeconds: 2,
    onPart: () => {
      timeline.push("reader:part");
      firstPart.resolve();
    },
  });
  async function* source() {
    timeline.push("writer:yield-first");
    yield parts[0];
    await withTimeout(firstPart.promise, LIVE_WAIT_MS, "the reader to see the first piped part");
    timeline.push("writer:resumed-after-reader-saw-first");
    for (const part of parts.slice(1)) {
      yield part;
    }
    timeline.push("writer:source-done");
  }
  const manager = new StandardRealtimeStreamsManager(writerClient, apiUrl());
  const writer = manager.pipe(key, source(), { target: runId });
  const written = await outcome(writer.wait());
  timeline.push("writer:wait-resolved");
  const read = await reading;
  return { written, read, timeline };
}

async function appendLive(writerClient, readerClient, runId, key, parts) {
  const firstPart = firstPartSignal();
  const timeline = [];
  const reading = readStream(readerClient, runId, key, {
    timeoutInSeconds: 2,
    onPart: () => {
      timeline.push("reader:part");
      firstPart.resolve();
    },
  });
  const responses = [];
  responses.push(await outcome(writerClient.appendToStream(runId, "self", key, parts[0])));
  timeline.push("writer:appended-first");
  const sawFirst = await outcome(
    withTimeout(firstPart.promise, LIVE_WAIT_MS, "the reader to see the first appended part"),
  );
  timeline.push(sawFirst.ok ? "writer:resumed-after-reader-saw-first" : "writer:gave-up-waiting");
  for (const part of parts.slice(1)) {
    responses.push(await outcome(writerClient.appendToStream(runId, "self", key, part)));
  }
  timeline.push("writer:done");
  const read = await reading;
  return { responses, sawFirst, read, timeline };
}

await main(async ({ runId, token, pipeKey, appendKey, pipeParts, appendParts }) => {
  const writerClient = clientWith(secretKey());
  // Read with the run's public access token, as a browser would.
  const readerClient = clientWith(token);
  // Different keys, so the two checks can run side by side (each ends with a 2 s idle close).
  const [pipe, append] = await Promise.all([
    pipeLive(writerClient, readerClient, runId, pipeKey, pipeParts),
    appendLive(writerClient, readerClient, runId, appendKey, appendParts),
  ]);
  return { pipe, append };
});
