// tasks.trigger and ApiClient.triggerTask: each returns a run id and a publicAccessToken that
// reads its own run's streams and no other run's.
// Input: {taskId, parts: [...]}. The framing follows TRIGGER_V2_REALTIME_STREAMS, which the SDK
// turns into the x-trigger-realtime-streams-version header of the trigger request.
import { configure, tasks } from "@trigger.dev/sdk";
import {
  apiUrl,
  clientWith,
  jwtClaims,
  main,
  outcome,
  readStream,
  secretKey,
} from "./lib.mjs";

await main(async ({ taskId, parts }) => {
  configure({ baseURL: apiUrl(), accessToken: secretKey() });
  const secretClient = clientWith(secretKey());

  const viaTasks = await tasks.trigger(taskId, { from: "tasks.trigger", parts });
  const viaApiClient = await secretClient.triggerTask(taskId, {
    payload: { from: "ApiClient.triggerTask", parts },
    options: { payloadType: "application/json" },
  });
  const runs = {
    tasksTrigger: { id: viaTasks.id, token: viaTasks.publicAccessToken },
    apiClient: { id: viaApiClient.id, token: viaApiClient.publicAccessToken },
  };

  // Fill each run's default stream through the secret key, as a task would.
  for (const run of Object.values(runs)) {
    for (const part of parts) {
      await secretClient.appendToStream(run.id, "self", "default", part);
    }
  }

  const report = {};
  for (const [name, run] of Object.entries(runs)) {
    const other = name === "tasksTrigger" ? runs.apiClient : runs.tasksTrigger;
    const own = clientWith(run.token);
    report[name] = {
      runId: run.id,
      tokenIsString: typeof run.token === "string" && run.token.length > 0,
      claims: jwtClaims(run.token),
      readOwn: await readStream(own, run.id, "default"),
      readOther: await readStream(own, other.id, "default"),
      sendInputOwn: await outcome(own.sendInputStream(run.id, "conformance", { from: name })),
      sendInputOther: await outcome(own.sendInputStream(other.id, "conformance", { from: name })),
    };
  }
  return report;
});
