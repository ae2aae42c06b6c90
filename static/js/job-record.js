/* A job's record in the jobs API, as this page runs it: created, each attempt, and its end, sent in
 * order in the background so recording never holds up tokens (docs/inference.md). */

// A run shorter than this is recorded once it has ended, so its requests never compete with the
// model for the CPU (on a two-core machine they cost a tiny model's run a fifth of its speed); a
// longer run is in the history, as running, from this moment on.
const RECORD_AFTER_MS = 1000;

// What a request that outlives its page may carry (the browser allows 64 KiB for all of them).
const KEEPALIVE_MAX = 60_000;

/** The job's record in the jobs API: its steps go out in order, in the background, never blocking
 * tokens, from RECORD_AFTER_MS into the run or when it ends. Each says how long ago it happened
 * (`age_ms`), so the history keeps the run's own timing however late the record leaves. */
export class JobRecord {
  #open;
  #csrf;
  #sofar;
  #leaving = false;

  /** `fields`: the job as POST /api/jobs takes it; `csrf`: the page's CSRF token; `sofar()`: the
   * run's {output, token_count} so far, recorded if the page goes away before the run ends. */
  constructor(fields, csrf, sofar = () => ({})) {
    this.#csrf = csrf;
    this.#sofar = sofar;
    this.started = false;
    this.attempts = 0;
    const at = performance.now();
    const opened = new Promise((resolve) => (this.#open = resolve));
    this.chain = opened.then(() => this.#send("POST", "/api/jobs", fields, at)).then((job) => (this.job = job));
    this.timer = setTimeout(this.#open, RECORD_AFTER_MS);
    // The document goes mid-run (tab closed, reloaded, left the app): nothing after this handler
    // runs, so one request must say it all. A recorded job ends cancelled with what it has so far; a
    // run too young to be recorded yet can only be created (the create's answer never comes back
    // to send more), and the server's sweep marks it abandoned later.
    this.onHide = () => {
      this.#leaving = true;
      if (this.job) this.#leave();
      else this.#open();
    };
    addEventListener("pagehide", this.onHide);
  }

  /** An attempt starts on `workerPeer` (null: this browser); any attempt before it was given up. */
  start(workerPeer = null) {
    if (this.started) this.#then({ status: "queued" });
    this.started = true;
    this.attempts += 1;
    this.#then(workerPeer ? { status: "running", worker_peer: workerPeer } : { status: "running" });
  }

  /** The last step; resolves with {job} once recorded, or {error} saying why it was not. */
  finish(patch) {
    if (!this.started && patch.status !== "cancelled") this.start();
    this.#then(patch);
    clearTimeout(this.timer);
    removeEventListener("pagehide", this.onHide);
    this.#open();
    return this.chain.then((job) => ({ job }), (error) => ({ error }));
  }

  #leave() {
    const { output = "", token_count: tokens = 0, trace } = this.#sofar();
    const patch = { status: "cancelled", error: "The page was closed before the run finished.", output, token_count: tokens };
    let body = JSON.stringify(patch);
    // A long answer is cut to what a keepalive request may carry, rather than not recorded at all.
    while (body.length > KEEPALIVE_MAX && patch.output) {
      patch.output = patch.output.slice(0, Math.floor(patch.output.length / 2));
      body = JSON.stringify(patch);
    }
    // The trace so far goes too, where it still fits.
    const traced = trace ? JSON.stringify({ ...patch, trace }) : "";
    if (traced && traced.length <= KEEPALIVE_MAX) body = traced;
    fetch(`/api/jobs/${this.job.id}`, {
      method: "PATCH",
      headers: { "content-type": "application/json", accept: "application/json", "x-csrftoken": this.#csrf },
      body,
      keepalive: true,
    }).catch(() => {});
  }

  #then(patch) {
    const at = performance.now();
    this.chain = this.chain.then((job) => this.#send("PATCH", `/api/jobs/${job.id}`, patch, at).then(() => job));
  }

  async #send(method, url, fields, at) {
    const body = JSON.stringify({ ...fields, age_ms: performance.now() - at });
    const response = await fetch(url, {
      method,
      headers: { "content-type": "application/json", accept: "application/json", "x-csrftoken": this.#csrf },
      body,
            keepalive: this.#leaving && body.length < KEEPALIVE_MAX,
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.detail ?? `The server answered ${response.status}.`);
    return data;
  }
}
