// The baseline for bench/inference/run.py: the transformers.js pipeline called directly, with the
// same vendored files, model and env settings as the room page, and nothing else. bare.html runs it
// on the page's main thread, or (config.worker) in bare-worker.js, a module worker of its own.

export async function openPipeline(config) {
  const { env, pipeline, TextStreamer } = await import(config.transformers);
  env.backends.onnx.wasm.wasmPaths = { mjs: config.mjs, wasm: config.wasm };
  if (config.threads) env.backends.onnx.wasm.numThreads = config.threads;
  env.allowLocalModels = true;
  env.allowRemoteModels = false;
  env.localModelPath = "/models/";
  const generator = await pipeline("text-generation", config.model, { device: "wasm", dtype: config.dtype });

  return async function generate(prompt, maxNewTokens) {
    let first = 0;
    let last = 0;
    let tokens = 0;
    let text = "";
    const streamer = new TextStreamer(generator.tokenizer, {
      skip_prompt: true,
      callback_function: (piece) => (text += piece),
      token_callback_function: () => {
        last = performance.now();
        first ||= last;
        tokens += 1;
      },
    });
    const sent = performance.now();
    await generator(prompt, { max_new_tokens: maxNewTokens, do_sample: false, streamer });
    return { ttft_ms: first - sent, tok_s: ((tokens - 1) * 1000) / (last - first), tokens, text };
  };
}
