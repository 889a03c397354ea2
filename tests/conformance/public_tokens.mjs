// auth.createPublicToken / auth.createTriggerPublicToken tokens work inside their scopes and are
// refused outside them (other run, other task, wrong action, expired, bad signature, no scopes,
// JWT on a secret-key-only route), each with the SDK's own error class and status.
// Input: {runA, runB, taskA, taskB}: two open runs of two different tasks.
import { generateJWT } from "@trigger.dev/core/v3";
import { auth, configure } from "@trigger.dev/sdk";
import {
  apiUrl,
  clientWith,
  jwtClaims,
  main,
  outcome,
  readStream,
  secretKey,
} from "./lib.mjs";

const WRONG_SECRET = "tr_dev_not_the_emulator_key_0123456789abcdefgh";

function tamperSignature(token) {
  const [header, payload, signature] = token.split(".");
  const flipped = (signature[0] === "A" ? "B" : "A") + signature.slice(1);
  return [header, payload, flipped].join(".");
}

await main(async ({ runA, runB, taskA, taskB }) => {
  configure({ baseURL: apiUrl(), accessToken: secretKey() });
  const secretClient = clientWith(secretKey());
  await secretClient.appendToStream(runA, "self", "default", "part of A");
  await secretClient.appendToStream(runB, "self", "default", "part of B");

  const readRunA = await auth.createPublicToken({ scopes: { read: { runs: [runA] } } });
  const readTaskA = await auth.createPublicToken({ scopes: { read: { tasks: [taskA] } } });
  const readAllRuns = await auth.createPublicToken({ scopes: { read: { runs: true } } });
  const writeInputA = await auth.createPublicToken({
    scopes: { write: { inputStreams: [runA] } },
  });
  const expired = await auth.createPublicToken({
    scopes: { read: { runs: [runA] }, write: { inputStreams: [runA] } },
    expirationTime: Math.floor(Date.now() / 1000) - 120,
  });
  const noScopes = await auth.createPublicToken();
  const wrongKey = await generateJWT({
    secretKey: WRONG_SECRET,
    payload: { sub: jwtClaims(readRunA).sub, pub: true, scopes: [`read:runs:${runA}`] },
    expirationTime: "15m",
  });
  const tampered = tamperSignature(readRunA);
  const triggerTaskA = await auth.createTriggerPublicToken(taskA, { multipleUse: true });

  const read = (token, runId) => readStream(clientWith(token), runId, "default");
  const send = (token, runId) =>
    outcome(clientWith(token).sendInputStream(runId, "conformance", { via: "public token" }));
  const trigger = (token, taskId) =>
    outcome(
      clientWith(token).triggerTask(taskId, {
        payload: { via: "trigger token" },
        options: { payloadType: "application/json" },
      }),
    );

  const oneTimeTrigger = await auth.createTriggerPublicToken(taskA);
  const cases = {
    readRunA_readsA: () => read(readRunA, runA),
    readRunA_readsB: () => read(readRunA, runB),
    readTaskA_readsA: () => read(readTaskA, runA),
    readTaskA_readsB: () => read(readTaskA, runB),
    readAllRuns_readsA: () => read(readAllRuns, runA),
    readAllRuns_readsB: () => read(readAllRuns, runB),
    writeInputA_sendsA: () => send(writeInputA, runA),
    writeInputA_sendsB: () => send(writeInputA, runB),
    writeInputA_readsA: () => read(writeInputA, runA),
    readRunA_sendsA: () => send(readRunA, runA),
    expired_readsA: () => read(expired, runA),
    expired_sendsA: () => send(expired, runA),
    wrongKey_readsA: () => read(wrongKey, runA),
    tampered_readsA: () => read(tampered, runA),
    noScopes_readsA: () => read(noScopes, runA),
    readRunA_appendsA: () =>
      outcome(clientWith(readRunA).appendToStream(runA, "self", "default", "not allowed")),
    triggerTaskA_triggersA: () => trigger(triggerTaskA, taskA),
    triggerTaskA_triggersB: () => trigger(triggerTaskA, taskB),
    readRunA_triggersA: () => trigger(readRunA, taskA),
  };
  // Independent checks run side by side: every successful read ends with a 1 s idle close.
  const names = Object.keys(cases);
  const results = await Promise.all(names.map((name) => cases[name]()));
  const report = Object.fromEntries(names.map((name, index) => [name, results[index]]));
  // A one-time-use trigger token (the default) works once; the reuse is refused.
  report.oneTimeTrigger_first = await trigger(oneTimeTrigger, taskA);
  report.oneTimeTrigger_again = await trigger(oneTimeTrigger, taskA);

  return {
    claims: {
      readRunA: jwtClaims(readRunA),
      triggerTaskA: jwtClaims(triggerTaskA),
      oneTimeTrigger: jwtClaims(oneTimeTrigger),
    },
    cases: report,
  };
});
