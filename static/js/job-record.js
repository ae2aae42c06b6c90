/* A job's record in the jobs API, as this page runs it: created, each attempt, and its end, sent in
 * order in the background so recording never holds up tokens (docs/inference.md). */

// A run shorter than this is recorded once it has ended, so its requests never compete with the
// model for the CPU (on a two-core machine they cost a tiny model's run a fifth of its speed); a
// longer run is in the history, as running, from this moment on.
const RECORD_AFTER_MS = 1000;

/** The job's record in the jobs API: its steps go out in order, in the background, never blocking
 * tokens, from RECORD_AFTER_MS into the run or when it ends. Each says how long ago it happened
 * (`age_ms`), so the history keeps the run's own timing however late the record leaves. */
export class JobRecord {
  #open;
  #csrf;
  #leaving = false;

  /** `fields`: the job as POST /api/jobs takes it; `csrf`: the page's CSRF token. */
  constructor(fields, csrf) {
    this.#csrf = csrf;
    this.started = false;
    this.attempts = 0;
    const at = performance.now();
    const opened = new Promise((resolve) => (this.#open = resolve));
    this.chain = opened.then(() => this.#send("POST", "/api/jobs", fields, at)).then((job) => (this.job = job));
    this.timer = setTimeout(this.#open, RECORD_AFTER_MS);
    // Leaving mid-run: the job still reaches the history, where it ends up abandoned.
    this.onHide = () => {
      this.#leaving = true;
      this.#open();
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
      // Outlives the page, within the browser's 64 KiB allowance for such requests.
      keepalive: this.#leaving && body.length < 60_000,
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.detail ?? `The server answered ${response.status}.`);
    return data;
  }
}
