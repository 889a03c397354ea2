// ApiClient.sendInputStream: reaches a waiting simulated task with the exact payload, and a send to
// a completed run fails with the SDK's error.
// Input: {openRunId, openToken, completedRunId, completedToken, streamId, payload, outputKey}.
import { clientWith, main, outcome, readStream, secretKey } from "./lib.mjs";

await main(
  async ({ openRunId, openToken, completedRunId, completedToken, streamId, payload, outputKey }) => {
    // The run's own public access token carries write:inputStreams:<run>, as in the browser.
    const sendOpen = await outcome(clientWith(openToken).sendInputStream(openRunId, streamId, payload));
    const output = outputKey
      ? await readStream(clientWith(openToken), openRunId, outputKey, { timeoutInSeconds: 2 })
      : null;
    const sendCompletedWithToken = await outcome(
      clientWith(completedToken).sendInputStream(completedRunId, streamId, payload),
    );
    const sendCompletedWithSecret = await outcome(
      clientWith(secretKey()).sendInputStream(completedRunId, streamId, payload),
    );
    return { sendOpen, output, sendCompletedWithToken, sendCompletedWithSecret };
  },
);
