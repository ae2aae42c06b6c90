/* Runs language models with transformers.js inside a module Web Worker.
 * It speaks only {type, ...} messages (protocol in docs/inference.md); one worker keeps one backend for life. */

import { loadFailureReason } from "/static/js/load-failure.js";
import { FACTORY_URL, compileEarly } from "/static/js/ort-factory.js";

// An adapter from one of these is a CPU emulating a GPU: slower than WASM, so it counts as "no GPU".
const SOFTWARE_GPU = /swiftshader|llvmpipe|lavapipe|softpipe|basic render|software/i;
// Tokens are posted together when they come faster than this: a tiny model makes thousands a
// second, and ~30 page updates a second read as smooth while costing the page half the repaints.
const TOKEN_BATCH_MS = 33;
// Far faster than anyone reads (FAST_BATCH_TOKENS or more per TOKEN_BATCH_MS, about 240 tok/s),
// updates come every FAST_BATCH_MS instead: each one costs a repaint, and where the page's threads
// share a core with this worker, every repaint slows the generation (docs/benchmarks.md).
const FAST_BATCH_TOKENS = 8;
const FAST_BATCH_MS = 100;
// The most messages a job may carry to another peer (protocol.js, the API's limit).
const MAX_CHAT_MESSAGES = 64;

/** Whether the tokens since the last message are due to be posted: the first one at once. */
function due({ tokens, posted, last, postedAt }) {
  const waited = last - postedAt;
  return posted === 0 || waited >= FAST_BATCH_MS || (waited >= TOKEN_BATCH_MS && tokens - posted < FAST_BATCH_TOKENS);
}

const state = {
  config: null, // the init message
  device: "", // "webgpu" | "wasm", fixed once init has answered
  lib: null, // the transformers.js module (a promise while it imports)
  model: null, // {id, generator, contextLimit} of the warm model
  loading: null, // {id, promise} while a model loads
  job: null, // {id, stopper} while a generation runs
  cancelFlag: null, // Int32Array on a SharedArrayBuffer the page sets to 1 to cancel, if it gave one
  watchingDevice: false, // whether the WebGPU device's loss is watched (once per worker)
  tokenizers: new Map(), // model id → promise of {tokenizer, contextLimit}, for chat templates of models not loaded here
};

const post = (message) => self.postMessage(message);
const fail = (code, message, extra = {}) => post({ type: "error", code, message, ...extra });

self.addEventListener("message", (event) => {
  const message = event.data;
  const handler = message && typeof message === "object" && HANDLERS[message.type];
  if (!handler) {
    fail("bad_message", "Messages must be objects whose type is one of: " + Object.keys(HANDLERS).join(", ") + ".");
    return;
  }
  handler(message).catch((error) => fail("internal", describe(error), { id: message.id }));
});

const HANDLERS = { init, load, generate, cancel, template };

function describe(error) {
  return String(error?.message ?? error).slice(0, 500);
}

function isUrl(value) {
  return typeof value === "string" && value.startsWith("/");
}

/** {type: "init", runtime, device, allow_software_gpu, threads, local_model_path, cancel_flag?} → {type: "backend"}.
 * cancel_flag (a SharedArrayBuffer, in cross-origin-isolated pages) lets a cancel land mid-generation at no cost. */
async function init(message) {
  if (state.config) return fail("bad_message", "This worker is already initialised; start a new one to change its backend.");
  const { runtime, device = "auto", threads = null, local_model_path: localModelPath = "/models/" } = message;
  const pairsOk = ["webgpu", "wasm"].every((key) => isUrl(runtime?.[key]?.mjs) && isUrl(runtime?.[key]?.wasm));
  if (!isUrl(runtime?.transformers) || !pairsOk || !["auto", "webgpu", "wasm"].includes(device) || !isUrl(localModelPath)) {
    return fail("bad_message", "init needs runtime.transformers, runtime.webgpu/wasm {mjs, wasm} as root-relative URLs, device auto|webgpu|wasm and a root-relative local_model_path.");
  }
  if (threads !== null && !(Number.isInteger(threads) && threads >= 1 && threads <= 16)) {
    return fail("bad_message", "threads must be an integer from 1 to 16, or null for ONNX Runtime's default.");
  }
  state.config = { ...message, local_model_path: localModelPath };
  // SharedArrayBuffer only exists in cross-origin-isolated contexts.
  if (self.crossOriginIsolated && message.cancel_flag instanceof SharedArrayBuffer) {
    state.cancelFlag = new Int32Array(message.cancel_flag);
  }

  // The runtime imports while the GPU is probed; the wasm fetch and compile start once the
  // backend is known, while transformers.js is still importing.
  state.lib = import(runtime.transformers);
  const gpu = device === "wasm" ? { adapter: null, reason: "WASM was asked for." } : await probeGpu(message);
  state.device = gpu.adapter ? "webgpu" : "wasm";
  compileEarly(runtime[state.device]);
  const lib = await importRuntime(runtime, threads);
  post({
    type: "backend",
    device: state.device,
    adapter: gpu.adapter,
    reason: gpu.reason,
    threads: lib.env.backends.onnx.wasm.numThreads ?? null,
    isolated: self.crossOriginIsolated === true,
  });
}

/** A real GPU adapter ({vendor, architecture}) or null, and why. */
async function probeGpu({ device, allow_software_gpu: allowSoftware = false }) {
  if (!self.navigator.gpu) return { adapter: null, reason: "This browser has no WebGPU." };
  let adapter = null;
  try {
    adapter = await self.navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch (error) {
    return { adapter: null, reason: `WebGPU adapter request failed: ${describe(error)}` };
  }
  if (!adapter) return { adapter: null, reason: "WebGPU is present but offers no adapter." };
  const info = adapter.info ?? {};
  const label = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" ");
  const software = info.isFallbackAdapter === true || adapter.isFallbackAdapter === true || SOFTWARE_GPU.test(label);
  if (software && !(allowSoftware && device === "webgpu")) {
    return { adapter: null, reason: `The only WebGPU adapter is a software one (${label || "fallback"}); WASM is faster.` };
  }
  return { adapter: { vendor: info.vendor ?? "", architecture: info.architecture ?? "", software }, reason: "" };
}

/** Import transformers.js and point ONNX Runtime at the wasm pair for this backend, through
 * ort-factory.js, which hands it the wasm compiled early. */
async function importRuntime(runtime, threads) {
  const lib = await state.lib;
  const pair = runtime[state.device];
  // Mutate, don't replace: transformers.js shares this object with ONNX Runtime. Its own default
  // points at a CDN; ORT reads the pair once per worker, which is why a backend is fixed per worker.
  lib.env.backends.onnx.wasm.wasmPaths = { mjs: FACTORY_URL, wasm: pair.wasm };
  if (threads !== null) lib.env.backends.onnx.wasm.numThreads = threads;
  // The wasm is then compiled streaming from the HTTP cache, where V8 keeps its compiled code
  // between visits. transformers.js's default (true) hands ORT a copy from Cache Storage as an
  // ArrayBuffer, which V8 compiles from scratch every visit (docs/benchmarks.md).
  lib.env.useWasmCache = false;
  lib.env.localModelPath = state.config.local_model_path; // root-relative: an absolute URL loses the tokenizer in 4.3.1
  return lib;
}

/** {type: "load", model, source: "local"|"hub", dtype} → {type: "progress"}* → {type: "ready", defaults} | error. */
async function load({ model, source, dtype }) {
  if (!state.config) return fail("not_initialised", "Send init before load.", { model });
  if (typeof model !== "string" || !model || !["local", "hub"].includes(source) || typeof dtype !== "string") {
    return fail("bad_message", "load needs model (string), source (local|hub) and dtype.", { model });
  }
  if (state.job) return fail("busy", "A generation is running; cancel it or wait before loading another model.", { model });
  if (state.model?.id === model) {
    return post({ type: "ready", model, device: state.device, load_ms: 0, warm: true, defaults: state.model.defaults });
  }
  if (state.loading?.id === model) return; // the first load's ready/error answers both
  if (state.loading) return fail("busy", `Still loading ${state.loading.id}.`, { model });

  const started = performance.now();
  const promise = openModel(model, source, dtype);
  state.loading = { id: model, promise };
  try {
    const opened = await promise;
    state.model = opened;
    if (state.device === "webgpu") watchDeviceLoss();
    post({ type: "ready", model, device: state.device, load_ms: performance.now() - started, warm: false, defaults: opened.defaults });
  } catch (error) {
    // 4.3.1 cannot recover from a failed WebGPU session in the same worker: the page starts a fresh one.
    const code = state.device === "webgpu" ? "webgpu_failed" : "load_failed";
    const reason = loadFailureReason(error, { source, device: state.device, online: self.navigator.onLine });
    fail(code, `Could not load ${model}: ${describe(error)}`, { model, reason });
  } finally {
    state.loading = null;
  }
}

/** Once a WebGPU session exists, ONNX Runtime holds its GPUDevice: if it is lost (a driver reset,
 * the GPU taken away), say so once, so the page stops serving others (pause.js). */
async function watchDeviceLoss() {
  if (state.watchingDevice) return;
  state.watchingDevice = true;
  try {
    const device = await (await state.lib).env.backends.onnx.webgpu?.device;
    device?.lost.then((info) => post({ type: "device_lost", message: String(info?.message ?? "") }));
  } catch (error) {
    console.warn(`inference: cannot watch the WebGPU device: ${describe(error)}`);
  }
}

async function openModel(model, source, dtype) {
  const lib = await state.lib;
  const previous = state.model;
  state.model = null;
  // One warm model per worker: a second one would double the memory a tab holds.
  await previous?.generator.dispose();
  lib.env.allowLocalModels = source === "local";
  lib.env.allowRemoteModels = source === "hub";
  const progress = progressReporter(model);
  const generator = await lib.pipeline("text-generation", model, {
    device: state.device,
    dtype,
    progress_callback: progress,
  });
  progress.flush();
  if (!state.cancelFlag) yieldBeforeEachStep(generator.model);
  const config = generator.model.config ?? {};
  const contextLimit = config.max_position_embeddings ?? config.n_positions ?? config.n_ctx ?? null;
  // What the model's generation_config applies when a request leaves a parameter out.
  const defaults = { repetition_penalty: generator.model.generation_config?.repetition_penalty ?? 1 };
  return { id: model, generator, contextLimit, defaults };
}

/** Without a shared cancel flag, let queued messages (a cancel) run between decoding steps.
 * On the WASM backend a whole generate() call only awaits already-settled promises, so without a
 * real task boundary the worker would read "cancel" after the last token. A MessageChannel hop costs
 * tens of microseconds, where setTimeout(0) is clamped to 4 ms. */
function yieldBeforeEachStep(model) {
  const channel = new MessageChannel();
  const waiting = [];
  channel.port1.onmessage = () => waiting.shift()?.();
  const forward = model.forward.bind(model);
  model.forward = async (inputs) => {
    await new Promise((resolve) => {
      waiting.push(resolve);
      channel.port2.postMessage(null);
    });
    return forward(inputs);
  };
}

/** Aggregate byte progress across the model's files, posted at most every 100 ms. */
function progressReporter(model) {
  let last = 0;
  let latest = null;
  const send = () => latest && post({ type: "progress", model, ...latest });
  const report = (info) => {
    if (info.status !== "progress_total") return;
    latest = { loaded: info.loaded, total: info.total };
    const now = performance.now();
    if (now - last >= 100 || info.loaded >= info.total) {
      last = now;
      send();
    }
  };
  report.flush = send;
  return report;
}

/** {type: "generate", id, model, prompt | messages, params, resume_text?, count_resumed?} →
 * {type: "token"}* → {type: "done"} | error. count_resumed (default true, the mesh's way): the
 * resumed tokens count against max_new_tokens; false (API jobs): max_new_tokens is what this
 * attempt may add. */
async function generate({ id, model, prompt, messages, params = {}, resume_text: resumeText = "", count_resumed: countResumed = true }) {
  const received = performance.now();
  const chat = Array.isArray(messages) && messages.length > 0 && messages.every((m) => typeof m?.role === "string" && typeof m?.content === "string");
  const promptOk = typeof prompt === "string" && prompt !== "";
  if (typeof id !== "string" || !id || chat === promptOk || typeof params !== "object" || params === null || typeof resumeText !== "string") {
    return fail("bad_message", "generate needs id (string), a prompt (non-empty string) or messages ([{role, content}]), params (object) and an optional resume_text (string).", { id });
  }
  if (state.job) return fail("busy", `Generation ${state.job.id} is still running.`, { id });
  if (!state.model || state.model.id !== model) return fail("not_loaded", `Load ${model} first.`, { id });

  const lib = await state.lib;
  const { generator, contextLimit } = state.model;
  const stopper = new lib.InterruptableStoppingCriteria();
  state.job = { id, stopper };
  if (state.cancelFlag) Atomics.store(state.cancelFlag, 0, 0);
  try {
    const { tokenizer } = generator;
    const input = modelInput(tokenizer, chat ? messages : [{ role: "user", content: prompt }], chat ? null : prompt);
    const promptTokens = countPromptTokens(tokenizer, input);
    const options = generationOptions(params);
    // transformers.js samples from one Mersenne Twister per worker, and this worker runs one
    // generation at a time: seeded here, a sampled answer repeats for the same seed, model and backend.
    if (options.do_sample && Number.isSafeInteger(params.seed) && params.seed >= 0) lib.random.seed(params.seed);
    // A resumed job (the mesh's failover, docs/mesh.md) continues an answer another peer began. Its
    // tokens are replayed as the first generated ones, one decoding step each, exactly as that peer
    // computed them: reading prompt and answer in one pass would differ in the last bits (dynamic
    // quantization scales by the whole batch), enough to flip greedy choices further on.
    // An answer so far that ends in whitespace (the server's, as it streamed) is replayed up to its
    // last word: a byte-level BPE would read a trailing space as a token the model never produced.
    // The model writes that whitespace again; it is `owed`, and not sent a second time.
    const kept = resumeText.trimEnd();
    const debt = resumeText.slice(kept.length);
    let owed = debt;
    const resumed = kept ? answerTokens(tokenizer, input, kept) : [];
    if (!countResumed && options.max_new_tokens) options.max_new_tokens += resumed.length;
    const budget = options.max_new_tokens ?? generator.model.generation_config?.max_new_tokens;
    if (resumed.length && budget !== undefined && budget <= resumed.length) {
      return post({ type: "done", id, text: "", tokens: 0, resumed_tokens: resumed.length, prompt_tokens: promptTokens, ttft_ms: null, tok_s: null, total_ms: performance.now() - received, reason: "length" });
    }
    let limitedByContext = false;
    if (contextLimit) {
      if (promptTokens >= contextLimit) {
        return fail("too_long", `The prompt is ${promptTokens} tokens; this model reads at most ${contextLimit - 1}.`, { id });
      }
      const room = contextLimit - promptTokens;
      const asked = options.max_new_tokens ?? generator.model.generation_config?.max_new_tokens ?? room;
      if (asked > room) {
        options.max_new_tokens = room;
        limitedByContext = true;
      }
    }

    // An API job's stop strings: the answer ends where the first one starts, at the token that
    // completed it (reason "stop"); until no stop string can start in them, the last characters wait.
    const stops = Array.isArray(params.stop) ? params.stop.filter((s) => typeof s === "string" && s !== "") : [];
    const hold = stops.length ? Math.max(...stops.map((s) => s.length)) - 1 : 0;
    const run = { tokens: 0, text: "", pending: "", first: 0, last: 0, posted: 0, postedAt: 0, ids: [], checked: 0, sent: 0, stopped: false };
    const streamer = new lib.TextStreamer(generator.tokenizer, {
      skip_prompt: true,
      skip_special_tokens: true,
      callback_function: (printed) => {
        if (run.stopped) return;
        let same = 0;
        while (same < owed.length && same < printed.length && printed[same] === owed[same]) same += 1;
        const text = printed.slice(same);
        // Once the model wrote something else (sampling may), the rest of the debt is off.
        owed = text ? "" : owed.slice(same);
        run.text += text;
        run.pending += text;
      },
      token_callback_function: (ids) => {
        if (run.stopped) return;
        if (stops.length) run.ids.push(...ids);
        run.last = performance.now();
        run.first ||= run.last;
        run.tokens += 1;
      },
    });
    // {type: "token", seq, text}: seq counts the tokens so far, text is what they completed since the
    // last message (words arrive whole). The first and the last token are always posted at once.
    const flush = (final = false) => {
      const end = final || run.stopped ? run.text.length : run.text.length - hold;
      const text = stops.length ? run.text.slice(run.sent, Math.max(run.sent, end)) : run.pending;
      run.sent = Math.max(run.sent, end);
      post({ type: "token", id, seq: run.tokens, text });
      run.pending = "";
      run.posted = run.tokens;
      run.postedAt = run.last;
    };
    // The whole answer is decoded again at each token (only with stop strings): the streamer
    // holds a word back until it ends, and a stop string may end inside one.
    const checkStops = () => {
      const whole = tokenizer.decode(run.ids, { skip_special_tokens: true });
      const from = Math.max(0, run.checked - hold);
      run.checked = whole.length;
      const at = Math.min(...stops.map((s) => whole.indexOf(s, from)).filter((i) => i >= 0));
      if (at === Infinity) return;
      let same = 0;
      while (same < debt.length && same < at && whole[same] === debt[same]) same += 1;
      run.text = whole.slice(same, at);
      run.stopped = true;
      stopper.interrupt();
    };
    const put = streamer.put.bind(streamer);
    let replaying = resumed.length + 1; // the prompt, then the resumed tokens: none of them is news
    streamer.put = (value) => {
      if (replaying > 0 && replaying-- <= resumed.length) return;
      const before = run.tokens;
      put(value);
      if (run.tokens > before && stops.length && !run.stopped) checkStops();
      if (run.tokens > before && (due(run) || run.stopped)) flush();
      if (state.cancelFlag && Atomics.load(state.cancelFlag, 0) === 1) stopper.interrupt();
    };
    const end = streamer.end.bind(streamer);
    streamer.end = () => {
      end();
      if (run.tokens > run.posted || run.pending || (stops.length && run.sent < run.text.length)) flush(true);
    };

    const processors = resumed.length ? [replayer(lib, resumed)] : [];
    if (options.do_sample && options.top_p < 1) {
      processors.push(nucleus(lib, options.top_p, options.top_k ?? generator.model.generation_config?.top_k ?? 0));
    }
    const extra = processors.length ? { logits_processor: processors } : {};
    await generator(input, { ...options, ...extra, streamer, stopping_criteria: [stopper] });

    const decodeS = (run.last - run.first) / 1000;
    const reason = run.stopped
      ? "stop"
      : stopper.interrupted
      ? "cancelled"
      : options.max_new_tokens && run.tokens + resumed.length >= options.max_new_tokens
        ? (limitedByContext ? "context" : "length")
        : "eos";
    post({
      type: "done",
      id,
      text: run.text,
      tokens: run.tokens,
      resumed_tokens: resumed.length,
      prompt_tokens: promptTokens,
      ttft_ms: run.first ? run.first - received : null,
      tok_s: run.tokens > 1 && decodeS > 0 ? (run.tokens - 1) / decodeS : null,
      total_ms: performance.now() - received,
      reason,
    });
  } catch (error) {
    fail("generate_failed", describe(error), { id });
  } finally {
    state.job = null;
  }
}

/** What the model reads. With a chat template: the messages, which the text-generation pipeline
 * renders with tokenizer.apply_chat_template(messages, {tokenize: false, add_generation_prompt: true}).
 * Without one: a room page's prompt as it is, and chat messages as "role: content" lines ending in
 * "assistant:", the text every peer renders for such a model (docs/realtime.md, "API jobs"). */
function modelInput(tokenizer, messages, prompt) {
  if (tokenizer.chat_template) return messages;
  return prompt ?? messages.map(({ role, content }) => `${role}: ${content}\n`).join("") + "assistant:";
}

/** {type: "template", id, model, source, messages, max_new_tokens, max_chars} → {type: "templated", id,
 * messages, prompt, prompt_tokens, trimmed, context_limit} | error. A conversation as its model reads
 * it: `messages` without the oldest turns while they leave the answer too little room (the answer
 * keeps max_new_tokens, at most half the context; the text at most max_chars characters and
 * MAX_CHAT_MESSAGES messages), and
 * `prompt`, their rendering (modelInput's). The system message and the last turn always stay;
 * `trimmed` counts the turns left out. The job then carries `messages`, so every peer renders them
 * with the same template, and records `prompt`. */
async function template({ id, model, source, messages, max_new_tokens: maxNew, max_chars: maxChars }) {
  const ok = Array.isArray(messages) && messages.length > 0 && messages.every((m) => typeof m?.role === "string" && typeof m?.content === "string");
  if (!state.config || typeof id !== "string" || !ok || !Number.isInteger(maxNew) || !Number.isInteger(maxChars)) {
    return fail("bad_message", "template needs init first, then id, messages ([{role, content}]), max_new_tokens and max_chars.", { id });
  }
  let chat;
  try {
    chat = await chatTokenizer(model, source);
  } catch (error) {
    // Its tokenizer could not be read: the same failure, said the same way, as a load's.
    const reason = loadFailureReason(error, { source, device: state.device, online: self.navigator.onLine });
    return fail("load_failed", `Could not load ${model}: ${describe(error)}`, { id, reason });
  }
  const { tokenizer, contextLimit } = chat;
  const system = messages[0].role === "system" ? messages.slice(0, 1) : [];
  let rest = messages.slice(system.length);
  const answerRoom = contextLimit ? Math.min(maxNew, Math.floor(contextLimit / 2)) : 0;
  let trimmed = 0;
  while (true) {
    const kept = [...system, ...rest];
    const input = modelInput(tokenizer, kept, null);
    const prompt = typeof input === "string" ? input : tokenizer.apply_chat_template(input, { add_generation_prompt: true, tokenize: false });
    const promptTokens = countPromptTokens(tokenizer, input);
    const fits = prompt.length <= maxChars && kept.length <= MAX_CHAT_MESSAGES && (!contextLimit || promptTokens + answerRoom <= contextLimit);
    if (fits || rest.length <= 1) {
      return post({ type: "templated", id, messages: kept, prompt, prompt_tokens: promptTokens, trimmed, context_limit: contextLimit });
    }
    // Drop the oldest turn, and an answer it leaves at the front: the history starts with a question.
    do {
      rest = rest.slice(1);
      trimmed += 1;
    } while (rest.length > 1 && rest[0].role !== "user");
  }
}

/** The warm model's tokenizer, or one loaded on its own (a mesh job's model need not run here). */
async function chatTokenizer(model, source) {
  if (state.model?.id === model) return { tokenizer: state.model.generator.tokenizer, contextLimit: state.model.contextLimit };
  if (!state.tokenizers.has(model)) {
    state.tokenizers.set(model, (async () => {
      const lib = await state.lib;
      lib.env.allowLocalModels = source === "local";
      lib.env.allowRemoteModels = source === "hub";
      const [tokenizer, config] = await Promise.all([lib.AutoTokenizer.from_pretrained(model), lib.AutoConfig.from_pretrained(model)]);
      return { tokenizer, contextLimit: config.max_position_embeddings ?? config.n_positions ?? config.n_ctx ?? null };
    })());
  }
  try {
    return await state.tokenizers.get(model);
  } catch (error) {
    state.tokenizers.delete(model);
    throw error;
  }
}

function countPromptTokens(tokenizer, input) {
  if (typeof input === "string") return tokenizer(input).input_ids.dims.at(-1);
  // return_dict: false, or 4.3.1 answers {input_ids, attention_mask} (which has no length).
  return tokenizer.apply_chat_template(input, { add_generation_prompt: true, tokenize: true, return_tensor: false, return_dict: false }).length;
}

/** The token ids of `answer` as the continuation of `input` (a prompt, or chat messages). */
function answerTokens(tokenizer, input, answer) {
  const chat = typeof input !== "string";
  const head = chat ? tokenizer.apply_chat_template(input, { add_generation_prompt: true, tokenize: false }) : input;
  const ids = (text) => Array.from(tokenizer(text, { add_special_tokens: !chat }).input_ids.data, Number);
  const before = ids(head);
  const whole = ids(head + answer);
  // Where the answer's first word merges into the prompt's last, tokenise the answer on its own.
  const aligned = before.every((id, i) => whole[i] === id);
  return aligned ? whole.slice(before.length) : ids(answer);
}

/** A logits processor that makes the first generated tokens `ids`, one per decoding step. */
function replayer(lib, ids) {
  let step = 0;
  const Replay = class extends lib.LogitsProcessor {
    _call(inputIds, logits) {
      const id = ids[step++];
      if (id !== undefined) {
        const scores = logits[0].data;
        scores.fill(-Infinity);
        scores[id] = 0;
      }
      return logits;
    }
  };
  return new Replay();
}

// A logit this far below the best one has a probability under e^-40 of it: nothing a cumulative sum
// of float32 probabilities can see, so nucleus sampling need not sort it.
const NEGLIGIBLE_LOGIT = 40;

/** Top-p (nucleus) sampling, which transformers.js 4.3.1 accepts but does not apply. Run after its
 * temperature, it keeps, among the top_k likeliest tokens (0: all), the smallest head whose
 * probabilities reach top_p, and masks the rest, so its sampler draws from that head alone: the
 * order the headless worker samples in (src/mesh_nanollm/worker/sampling.py). */
function nucleus(lib, topP, topK) {
  const Nucleus = class extends lib.LogitsProcessor {
    _call(inputIds, logits) {
      for (const row of logits) {
        const scores = row.data;
        let best = -Infinity;
        for (const score of scores) if (score > best) best = score;
        const order = [];
        for (let i = 0; i < scores.length; i += 1) if (scores[i] >= best - NEGLIGIBLE_LOGIT) order.push(i);
        order.sort((a, b) => scores[b] - scores[a] || a - b);
        if (topK > 0 && order.length > topK) order.length = topK;
        const weights = order.map((i) => Math.exp(scores[i] - best));
        const total = weights.reduce((sum, w) => sum + w, 0);
        let kept = 0;
        for (let cumulative = 0; kept < order.length && cumulative < topP * total; kept += 1) cumulative += weights[kept];
        const keep = new Set(order.slice(0, Math.max(kept, 1)));
        for (let i = 0; i < scores.length; i += 1) if (!keep.has(i)) scores[i] = -Infinity;
      }
      return logits;
    }
  };
  return new Nucleus();
}

/** Only the parameters the requester chose; the model's generation_config supplies the rest. */
function generationOptions(params) {
  const options = {};
  const int = (value, lo, hi) => Number.isInteger(value) && value >= lo && value <= hi;
  const num = (value, lo, hi) => typeof value === "number" && value >= lo && value <= hi;
  if (int(params.max_new_tokens, 1, 4096)) options.max_new_tokens = params.max_new_tokens;
  if (num(params.repetition_penalty, 1, 2)) options.repetition_penalty = params.repetition_penalty;
  if (num(params.temperature, 0, 2) && params.temperature > 0) {
    options.do_sample = true;
    options.temperature = params.temperature;
    if (int(params.top_k, 1, 1000)) options.top_k = params.top_k;
    if (num(params.top_p, 0.01, 1)) options.top_p = params.top_p;
  } else {
    options.do_sample = false;
  }
  return options;
}

/** {type: "cancel", id}: the running generation stops after its current token and answers done/cancelled. */
async function cancel({ id }) {
  if (state.job && (id === undefined || id === state.job.id)) state.job.stopper.interrupt();
}
