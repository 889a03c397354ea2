// Follows one run with the official ApiClient.subscribeToRun (@trigger.dev/core, unchanged) and
// prints each run object it yields as one JSON line ({"run": …}) the moment it arrives, then
// {"end": true} when the subscription ends, or {"error": …} if it failed. The Python side reads
// the lines as they come, to follow the same run in lockstep with the Python client.
// Input on stdin: {runId, token?, skipColumns?}.
import { clientWith, describeError, readStdinJson, secretKey } from "./lib.mjs";

function emit(document) {
  process.stdout.write(`${JSON.stringify(document)}\n`);
}

const { runId, token, skipColumns } = await readStdinJson();
const client = clientWith(token ?? secretKey());
try {
  const subscription = client.subscribeToRun(runId, skipColumns ? { skipColumns } : {});
  for await (const run of subscription) {
    emit({ run: JSON.parse(JSON.stringify(run)) });
  }
  emit({ end: true });
} catch (error) {
  emit({ error: describeError(error) });
}
