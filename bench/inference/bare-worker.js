// bare.js in a module worker: {config} opens the pipeline and answers "ready"; {prompt, n} answers
// with generate()'s result. Timings are taken inside the worker, as the room page's worker does.
import { openPipeline } from "/bench/bare.js";

let generate = null;
self.onmessage = async ({ data }) => {
  if (data.config) {
    generate = await openPipeline(data.config);
    self.postMessage("ready");
  } else {
    self.postMessage(await generate(data.prompt, data.n));
  }
};
