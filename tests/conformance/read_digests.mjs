// Reads one stream with ApiClient.fetchStream and reports each part as {id, length, sha256} of
// its chunk (a string), so a stream of tens of megabytes can be compared without printing it.
// Input: {runId, key, token?, timeoutInSeconds?}.
import { createHash } from "node:crypto";
import { clientWith, main, readStream, secretKey } from "./lib.mjs";

await main(async ({ runId, key, token, timeoutInSeconds }) => {
  const read = await readStream(clientWith(token ?? secretKey()), runId, key, {
    timeoutInSeconds: timeoutInSeconds ?? 1,
  });
  const digest = (chunk) =>
    typeof chunk === "string"
      ? { length: chunk.length, sha256: createHash("sha256").update(chunk, "utf8").digest("hex") }
      : { length: null, sha256: null, type: typeof chunk };
  return {
    ok: read.ok,
    error: read.error ?? null,
    chunksMatchParts: read.chunksMatchParts ?? false,
    parts: read.parts.map((part) => ({ id: part.id, ...digest(part.chunk) })),
  };
});
