// Reads a list of streams with ApiClient.fetchStream (onPart captures ids) for the client parity
// test. Input: {reads: [{name, runId, key, lastEventId?, startIndex?, token?}]}.
// startIndex is sent the way the SDK's streams.read and useRealtimeStream send it:
// Last-Event-ID = startIndex - 1 (none for 0).
import { clientWith, main, readStream, secretKey } from "./lib.mjs";

await main(async ({ reads, timeoutInSeconds }) => {
  const results = await Promise.all(
    reads.map(({ runId, key, lastEventId, startIndex, token }) =>
      readStream(clientWith(token ?? secretKey()), runId, key, {
        timeoutInSeconds: timeoutInSeconds ?? 1,
        lastEventId: lastEventId ?? (startIndex ? String(startIndex - 1) : undefined),
      }),
    ),
  );
  return Object.fromEntries(reads.map(({ name }, index) => [name, results[index]]));
});
