/* One prompt this page runs, here or on another peer (mesh.js decides), recorded through the jobs
 * API (job-record.js). It belongs to the peer session, not to the room page's DOM: the page can be
 * swapped out and back while it streams, and the room view shows it again from its fields.
 *
 * Events (CustomEvent): token (text and tokens changed), attempt (an attempt started: `where` says
 * where it runs now), flash {kind, text}, end (running is false, metrics set), recorded (job set,
 * or flash says why not). */

import { JobRecord } from "/static/js/job-record.js";
import { JobTrace, honestTokS } from "/static/js/job-trace.js";

/** Where an answer is running (`running`) or came from, when not (only) from this browser: the
 * one place that words it, for the page while it streams and for the metrics once it is over. */
function whereItRan({ attempts }, running = false) {
  if (attempts.every((attempt) => !attempt.worker)) return "";
  const name = (attempt) => attempt.name ?? "this browser";
  const last = attempts.at(-1);
  if (attempts.length === 1) return running ? `Running on ${name(last)}…` : `ran on ${name(last)}`;
  const dropped = `${attempts.slice(0, -1).map(name).join(", ")} dropped out`;
  if (!running) return `${dropped}; ${name(last)} finished it`;
  return `${dropped}; continuing ${last.worker ? `on ${name(last)}` : "in this browser"}…`;
}

const FALLBACK = {
  no_peers: "No other peer in this room can run this model right now, so it ran in this browser.",
  declined: "Every peer was busy or could not take it, so it ran in this browser.",
};

export class PageRun extends EventTarget {
  id = crypto.randomUUID();
  text = "";
  tokens = 0;
  running = true;
  metrics = null; // {ttft, tokS, tokens, reason, where} once over (none if it failed)
  job = null; // its record, once recorded
  flash = null; // {kind, text}: the last thing said about it
  where = ""; // while it runs: where ("Running on bob's browser…"), or "" when only in this browser
  trace = new JobTrace(); // what happened when, sent with the record's last step
  error = null; // what ended it, if it failed (an InferenceError's reason says why a model did not load)

  #session;
  #handle = null;
  #cancel;

  /** fields: {entry, prompt, maxNewTokens, mode, sampling?} from the room page's form; sampling holds
   * the other generation params (temperature, top_p, top_k, repetition_penalty, seed). A
   * conversation's answer also has `messages` (what the model reads) and `prompt` is their
   * rendering, recorded as the job's. */
  constructor(session, fields) {
    super();
    this.#session = session;
    this.fields = fields;
    this.slug = session.slug;
    this.cancelled = new Promise((resolve) => (this.#cancel = resolve));
  }

  cancel() {
    if (!this.running) return;
    this.trace.add("cancel");
    this.#handle?.cancel();
    this.#cancel("cancelled");
  }

  async start() {
    const { peer, mesh } = this.#session;
    const { entry, prompt, messages, maxNewTokens, mode } = this.fields;
    const job = { room: this.slug, model: entry.id, prompt, params: { max_new_tokens: maxNewTokens, ...this.fields.sampling }, mode };
    if (mesh.peerId) job.requester_peer = mesh.peerId;
    let record = null;
    const attempts = []; // {worker, name} of each attempt (worker null: this browser), in order
    const recordAttempts = () => {
      for (const { worker } of attempts.slice(record.attempts)) record.start(worker);
    };
    const trace = this.trace;
    // While a step of the record waits to be sent again, an ended run says so; once it gets
    // through, what was said before comes back.
    let before = null;
    const onWaiting = (waiting) => {
      if (waiting && !this.running) {
        before = this.flash;
        this.#say("info", "Saving this run to your history… The server cannot be reached right now; this page will try again.");
      } else if (!waiting && this.flash?.text.startsWith("Saving this run")) {
        this.flash = before ?? { kind: "", text: "" };
        this.#emit("flash");
      }
    };
    // The page's socket back in its room: the server is too, so a waiting step goes at once.
    const rejoined = new AbortController();
    this.#session.addEventListener("connection", (e) => e.detail.state === "joined" && record?.retryNow(), { signal: rejoined.signal });
    const newRecord = () =>
      new JobRecord(job, this.#session.csrf, () => ({ output: this.text, token_count: this.tokens, trace }), { onWaiting });
    let attempt = 0; // the attempt running now, and whether its first token has come
    let attemptStarted = false;
    let attemptWorker = null;
    let first = 0; // when the first token arrived here, and how many tokens that message counted
    let firstSeq = 0;
    let last = 0;
    let outcome;
    try {
      // A run here needs the model first; on the mesh, the peer that takes the job loads it.
      if (mode === "local") trace.add("load_started", { attempt: 1 });
      const warm = peer.status.models_warm.includes(entry.id);
      const ready = mode === "local" ? await Promise.race([peer.load(entry), this.cancelled]) : null;
      if (ready && ready !== "cancelled") trace.add("load_ready", { attempt: 1, cached: warm, bytes: warm ? null : entry.size });
      if (ready === "cancelled") {
        outcome = { patch: { status: "cancelled" }, metrics: { ttft: null, tokS: null, tokens: 0, reason: "cancelled" } };
      } else {
        // Spell out the model's own defaults, so the history shows the parameters that really ran.
        if (ready) job.params = { ...ready.defaults, ...job.params };
        const sent = performance.now();
        this.#handle = mesh.run({ id: this.id, model: entry.id, prompt, ...(messages ? { messages } : {}), params: job.params }, {
          mode,
          onAttempt: ({ worker, name }) => {
            attempts.push({ worker, name });
            attempt += 1;
            attemptStarted = false;
            attemptWorker = worker;
            trace.add("dispatched", { attempt, peer: worker });
            if (record) recordAttempts();
            this.where = whereItRan({ attempts }, true);
            this.#emit("attempt");
          },
          onTrace: (kind, fields) => trace.add(kind, fields),
          onToken: (answer, seq) => {
            last = performance.now();
            if (!first) {
              first = last;
              firstSeq = seq;
            }
            if (!attemptStarted) {
              attemptStarted = true;
              trace.add("first_token", { attempt }, last);
            }
            if (seq > this.tokens) trace.tokens(seq - this.tokens, last);
            this.tokens = seq;
            this.text = answer;
            this.#emit("token");
          },
        });
        // Recorded alongside, never awaited, and only once the run is over unless it runs long.
        record = newRecord();
        recordAttempts();
        const result = await this.#handle.done;
        // Measured here, where the person sees it: offers, worker, messaging and page included; a
        // run too short to time honestly has no speed (the history says so too).
        const ttft = first ? first - sent : null;
        const decodeMs = first ? last - first : null;
        const decodeTokens = first ? Math.max(0, this.tokens - firstSeq) : 0;
        const tokS = first ? honestTokS(decodeMs, decodeTokens) : null;
        this.#traceEnd(result, attempt, attemptWorker);
        this.text = result.text;
        this.tokens = result.tokens;
        const patch = { status: result.reason === "cancelled" ? "cancelled" : "succeeded", output: result.text, token_count: result.tokens };
        if (ttft !== null) Object.assign(patch, { ttft_ms: ttft, decode_ms: decodeMs, decode_tokens: decodeTokens });
        outcome = { patch, metrics: { ttft, tokS, tokens: result.tokens, reason: result.reason, where: whereItRan(result) } };
        if (result.fallback) this.#say("info", [FALLBACK[result.fallback], result.declined].filter(Boolean).join(" "));
      }
    } catch (error) {
      this.error = error;
      trace.add("error", { attempt: attempt || null, peer: attemptWorker, reason: error.message });
      this.#say("error", `The model could not run: ${error.message}`);
      outcome = { patch: { status: "failed", error: error.message.slice(0, 2000), output: this.text, token_count: this.tokens } };
    }
    this.running = false;
    this.metrics = outcome.metrics ?? null;
    this.#emit("end");
    record ??= newRecord();
    recordAttempts();
    if (record.waiting) onWaiting(true);
    const { job: recorded, error } = await record.finish({ ...outcome.patch, trace });
    rejoined.abort();
    this.job = recorded ?? null;
    if (error) this.#say("error", `This run was not recorded in your history: ${error.message}`);
    this.#emit("recorded");
  }

  /** The last attempt's end in the trace; where it ran elsewhere, the model wait its worker reported,
   * placed just before the worker started generating (its own clock gives durations, not times). */
  #traceEnd(result, attempt, worker) {
    const end = performance.now();
    if (this.fields.mode !== "local" && result.load_ms !== null && result.total_ms !== null) {
      const generating = end - result.total_ms;
      const loading = generating - result.load_ms;
      const dispatched = this.trace.events.findLast((event) => event.kind === "dispatched")?.t ?? 0;
      const clamp = (at) => Math.max(at, this.trace.at(dispatched));
      if (!result.warm) this.trace.add("load_started", { attempt }, clamp(loading));
      this.trace.add("load_ready", { attempt, cached: result.warm }, clamp(generating));
    }
    if (result.reason === "cancelled") return;
    this.trace.add("done", { attempt, peer: worker, tokens: result.tokens, ttft_ms: result.ttft_ms, tok_s: result.tok_s }, end);
  }

  #say(kind, text) {
    this.flash = { kind, text };
    this.#emit("flash");
  }

  #emit(type) {
    this.dispatchEvent(new CustomEvent(type));
  }
}
