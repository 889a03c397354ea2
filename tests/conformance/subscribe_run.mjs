// Follows one run with the SDK's runs.subscribeToRun (ApiClient.subscribeToRun underneath)
// and, after each run object it yields, makes the next change in `steps`, so every change
// arrives as exactly one update. Input: {runId, token, steps: [step, ...]} where a step is
//   {"update": {...}}      POST /_emulator/runs/{run}/update (status, tags, metadata merge)
//   {"metadata": body}     ApiClient.updateRunMetadata (PUT /api/v1/runs/{run}/metadata)
//   {"stream": key}        ApiClient.createStream (PUT /realtime/v1/streams/{run}/self/{key})
//   {"fault": kind}        POST /_emulator/faults on the run's shape ("$shape")
//   {"complete": output}   POST /_emulator/runs/{run}/complete
//   {"fail": error}        POST /_emulator/runs/{run}/fail
// Output: {runs: [run as JSON], requests: [{query, status}] of the shape requests, error?}.
import { configure, runs } from "@trigger.dev/sdk";
import { apiUrl, clientWith, describeError, main, secretKey, withTimeout } from "./lib.mjs";

async function control(path, body) {
  const response = await fetch(`${apiUrl()}/_emulator${path}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${secretKey()}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    throw new Error(`control ${path} answered ${response.status}: ${await response.text()}`);
  }
}

async function perform(runId, step) {
  if ("update" in step) return control(`/runs/${runId}/update`, step.update);
  if ("metadata" in step) return clientWith(secretKey()).updateRunMetadata(runId, step.metadata);
  if ("stream" in step) return clientWith(secretKey()).createStream(runId, "self", step.stream);
  if ("fault" in step) {
    return control("/faults", { run_id: runId, key: "$shape", kind: step.fault, ...step.options });
  }
  if ("complete" in step) return control(`/runs/${runId}/complete`, { output: step.complete });
  if ("fail" in step) return control(`/runs/${runId}/fail`, { error: step.fail });
  throw new Error(`unknown step ${JSON.stringify(step)}`);
}

await main(async ({ runId, token, steps = [], skipColumns }) => {
  configure({ baseURL: apiUrl(), accessToken: token ?? secretKey() });
  const seen = [];
  let error = null;
  try {
    await withTimeout(
      (async () => {
        for await (const run of runs.subscribeToRun(runId, skipColumns ? { skipColumns } : {})) {
          seen.push(JSON.parse(JSON.stringify(run)));
          const step = steps[seen.length - 1];
          if (step) await perform(runId, step);
        }
      })(),
      60_000,
      "the run subscription to end",
    );
  } catch (caught) {
    error = describeError(caught);
  }
  const log = await fetch(`${apiUrl()}/_emulator/requests`, {
    headers: { Authorization: `Bearer ${secretKey()}` },
  }).then((response) => response.json());
  const requests = log
    .filter((entry) => entry.path === `/realtime/v1/runs/${runId}`)
    .map((entry) => ({ query: entry.query, status: entry.status }));
  return { runs: seen, requests, error };
});
