// Reads a list of streams with ApiClient.fetchStream (onPart captures ids) for the client parity
// test. Input: {reads: [{name, apiUrl?, runId, key, lastEventId?, startIndex?, token?}]}
// (`apiUrl` picks one of several emulators; the default is TRIGGER_API_URL).
// startIndex is sent the way the SDK's streams.read and useRealtimeStream send it:
// Last-Event-ID = startIndex - 1 (none for 0).
import { ApiClient } from "@trigger.dev/core/v3";
import { apiUrl as defaultApiUrl, main, readStream, secretKey } from "./lib.mjs";

await main(async ({ reads, timeoutInSeconds }) => {
  const results = await Promise.all(
    reads.map(({ apiUrl, runId, key, lastEventId, startIndex, token }) =>
      readStream(new ApiClient(apiUrl ?? defaultApiUrl(), token ?? secretKey()), runId, key, {
        timeoutInSeconds: timeoutInSeconds ?? 1,
        lastEventId: lastEventId ?? (startIndex ? String(startIndex - 1) : undefined),
      }),
    ),
  );
  return Object.fromEntries(reads.map(({ name }, index) => [name, results[index]]));
});
