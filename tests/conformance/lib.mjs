// Shared helpers for the conformance scripts. Each script reads one JSON document from stdin,
// drives the official SDK (unchanged) against the emulator named by TRIGGER_API_URL /
// TRIGGER_SECRET_KEY, and prints one JSON document on stdout. pytest does the asserting.
import { ApiClient, ApiError } from "@trigger.dev/core/v3";

export function requireEnv(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} must be set (the pytest driver passes it explicitly)`);
  }
  return value;
}

export function apiUrl() {
  return requireEnv("TRIGGER_API_URL");
}

export function secretKey() {
  return requireEnv("TRIGGER_SECRET_KEY");
}

export function clientWith(accessToken) {
  return new ApiClient(apiUrl(), accessToken);
}

export async function readStdinJson() {
  const chunks = [];
  for await (const chunk of process.stdin) {
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  return text.trim() ? JSON.parse(text) : {};
}

// The SDK's own error classes are what a user catches, so report the class name and status.
export function describeError(error) {
  if (error === null || typeof error !== "object") {
    return { class: typeof error, status: null, message: String(error), isApiError: false };
  }
  return {
    class: error.constructor?.name ?? "Object",
    status: typeof error.status === "number" ? error.status : null,
    message: String(error.message ?? ""),
    isApiError: error instanceof ApiError,
  };
}

// Runs `promise` and reports {ok, value} or {ok:false, error}; never throws.
export async function outcome(promise) {
  try {
    return { ok: true, value: await promise };
  } catch (error) {
    return { ok: false, error: describeError(error) };
  }
}

export function withTimeout(promise, milliseconds, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${milliseconds} ms waiting for ${what}`)),
      milliseconds,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Reads one stream to its idle close with ApiClient.fetchStream and returns every part the SDK
// decoded ({id, chunk, timestamp, recordId, headers}) in order, or the error it raised.
export async function readStream(client, runId, key, options = {}) {
  const parts = [];
  const chunks = [];
  try {
    const stream = await client.fetchStream(runId, key, {
      timeoutInSeconds: options.timeoutInSeconds ?? 1,
      lastEventId: options.lastEventId,
      onPart: (part) => {
        parts.push({
          id: part.id,
          chunk: part.chunk,
          timestamp: part.timestamp,
          recordId: part.recordId ?? null,
          headers: part.headers ?? null,
        });
        options.onPart?.(part);
      },
    });
    for await (const chunk of stream) {
      chunks.push(chunk);
    }
    return { ok: true, parts, chunksMatchParts: sameJson(chunks, parts.map((p) => p.chunk)) };
  } catch (error) {
    return { ok: false, parts, error: describeError(error) };
  }
}

export function sameJson(left, right) {
  return JSON.stringify(left) === JSON.stringify(right);
}

// Decodes a JWT's claims without verifying it (the emulator verifies; we only report scopes).
export function jwtClaims(token) {
  const [, payload] = token.split(".");
  return JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
}

// Entry point for every script: stdin JSON in, stdout JSON out, a hard deadline so a hang
// inside the SDK fails with a message instead of waiting for pytest's subprocess timeout.
export async function main(run, { deadlineMs = 90_000 } = {}) {
  const deadline = setTimeout(() => {
    process.stderr.write(`conformance script exceeded its ${deadlineMs} ms deadline\n`);
    process.exit(3);
  }, deadlineMs);
  deadline.unref();
  try {
    const input = await readStdinJson();
    const result = await run(input);
    process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0));
  } catch (error) {
    process.stderr.write(`${error?.stack ?? error}\n`);
    process.stdout.write(JSON.stringify({ fatal: describeError(error) }) + "\n", () =>
      process.exit(1),
    );
  }
}
