/* One prompt this page runs, here or on another peer (mesh.js decides), recorded through the jobs
 * API (job-record.js). It belongs to the peer session, not to the room page's DOM: the page can be
 * swapped out and back while it streams, and the room view shows it again from its fields.
 *
 * Events (CustomEvent): token (text and tokens changed), flash {kind, text}, end (running is false,
 * metrics set), recorded (job set, or flash says why not). */

import { JobRecord } from "/static/js/job-record.js";

/** Where an answer came from, when not (only) from this browser. */
function whereItRan({ attempts }) {
  if (attempts.every((attempt) => !attempt.worker)) return "";
  const name = (attempt) => (attempt.worker ? `${attempt.username}'s browser` : "this browser");
  if (attempts.length === 1) return `ran on ${name(attempts[0])}`;
  return `${attempts.slice(0, -1).map(name).join(", ")} dropped out; ${name(attempts.at(-1))} finished it`;
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
  error = null; // what ended it, if it failed (an InferenceError's reason says why a model did not load)

  #session;
  #handle = null;
  #cancel;

  /** fields: {entry, prompt, maxNewTokens, mode, sampling?} from the room page's form; sampling holds
   * the other generation params (temperature, top_p, top_k, repetition_penalty, seed). */
  constructor(session, fields) {
    super();
    this.#session = session;
    this.fields = fields;
    this.slug = session.slug;
    this.cancelled = new Promise((resolve) => (this.#cancel = resolve));
  }

  cancel() {
    if (!this.running) return;
    this.#handle?.cancel();
    this.#cancel("cancelled");
  }

  async start() {
    const { peer, mesh } = this.#session;
    const { entry, prompt, maxNewTokens, mode } = this.fields;
    const job = { room: this.slug, model: entry.id, prompt, params: { max_new_tokens: maxNewTokens, ...this.fields.sampling }, mode };
    if (mesh.peerId) job.requester_peer = mesh.peerId;
    let record = null;
    const workers = []; // each attempt's worker peer (null: this browser), in order
    const recordAttempts = () => {
      for (const worker of workers.slice(record.attempts)) record.start(worker);
    };
    const newRecord = () => new JobRecord(job, this.#session.csrf, () => ({ output: this.text, token_count: this.tokens }));
    let first = 0; // when the first token arrived here, and how many tokens that message counted
    let firstSeq = 0;
    let last = 0;
    let outcome;
    try {
      // A run here needs the model first; on the mesh, the peer that takes the job loads it.
      const ready = mode === "local" ? await Promise.race([peer.load(entry), this.cancelled]) : null;
      if (ready === "cancelled") {
        outcome = { patch: { status: "cancelled" }, metrics: { ttft: null, tokS: null, tokens: 0, reason: "cancelled" } };
      } else {
        // Spell out the model's own defaults, so the history shows the parameters that really ran.
        if (ready) job.params = { ...ready.defaults, ...job.params };
        const sent = performance.now();
        this.#handle = mesh.run({ id: this.id, model: entry.id, prompt, params: job.params }, {
          mode,
          onAttempt: ({ worker }) => {
            workers.push(worker);
            if (record) recordAttempts();
          },
          onToken: (answer, seq) => {
            last = performance.now();
            if (!first) {
              first = last;
              firstSeq = seq;
            }
            this.tokens = seq;
            this.text = answer;
            this.#emit("token");
          },
        });
        // Recorded alongside, never awaited, and only once the run is over unless it runs long.
        record = newRecord();
        recordAttempts();
        const result = await this.#handle.done;
        // Measured here, where the person sees it: offers, worker, messaging and page included.
        const ttft = first ? first - sent : null;
        const tokS = this.tokens > firstSeq && last > first ? ((this.tokens - firstSeq) * 1000) / (last - first) : null;
        this.text = result.text;
        this.tokens = result.tokens;
        const patch = { status: result.reason === "cancelled" ? "cancelled" : "succeeded", output: result.text, token_count: result.tokens };
        if (ttft !== null) patch.ttft_ms = ttft;
        outcome = { patch, metrics: { ttft, tokS, tokens: result.tokens, reason: result.reason, where: whereItRan(result) } };
        if (result.fallback) this.#say("info", [FALLBACK[result.fallback], result.declined].filter(Boolean).join(" "));
      }
    } catch (error) {
      this.error = error;
      this.#say("error", `The model could not run: ${error.message}`);
      outcome = { patch: { status: "failed", error: error.message.slice(0, 2000), output: this.text, token_count: this.tokens } };
    }
    this.running = false;
    this.metrics = outcome.metrics ?? null;
    this.#emit("end");
    record ??= newRecord();
    recordAttempts();
    const { job: recorded, error } = await record.finish(outcome.patch);
    this.job = recorded ?? null;
    if (error) this.#say("error", `This run was not recorded in your history: ${error.message}`);
    this.#emit("recorded");
  }

  #say(kind, text) {
    this.flash = { kind, text };
    this.#emit("flash");
  }

  #emit(type) {
    this.dispatchEvent(new CustomEvent(type));
  }
}
