/* A job's record in the jobs API, as this page runs it: created, each attempt, and its end, sent in
 * order in the background so recording never holds up tokens (docs/inference.md). */

// A run shorter than this is recorded once it has ended, so its requests never compete with the
// model for the CPU (on a two-core machine they cost a tiny model's run a fifth of its speed); a
// longer run is in the history, as running, from this moment on.
const RECORD_AFTER_MS = 1000;

// What a request that outlives its page may carry (the browser allows 64 KiB for all of them).
const KEEPALIVE_MAX = 60_000;

// A step the server did not get (unreachable, or a proxy's 502/503/504 while it restarts) is sent
// again, after FIRST_RETRY_MS and then up to twice as late, at most MAX_RETRY_MS apart, for
// RETRY_FOR_MS; the steps after it wait, so the record keeps its order. A refusal is final.
const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 30_000;
const RETRY_FOR_MS = 5 * 60_000;
const UNAVAILABLE = new Set([502, 503, 504]);

/** A step that did not reach the server (or its answer did not come back): worth sending again. */
class Unreachable extends Error {}

/** The job's record in the jobs API: its steps go out in order, in the background, never blocking
 * tokens, from RECORD_AFTER_MS into the run or when it ends. Each says how long ago it happened
 * (`age_ms`), so the history keeps the run's own timing however late the record leaves. */
export class JobRecord {
  #open;
  #csrf;
  #sofar;
  #leaving = false;
  #wake = null; // ends the wait before the next try, if one is waiting
  waiting = false; // a step failed to reach the server and is to be sent again

  /** `fields`: the job as POST /api/jobs takes it; `csrf`: the page's CSRF token; `sofar()`: the
   * run's {output, token_count} so far, recorded if the page goes away before the run ends. */
  constructor(fields, csrf, sofar = () => ({}), { onWaiting = () => {} } = {}) {
    this.#csrf = csrf;
    this.#sofar = sofar;
    this.onWaiting = onWaiting; // called with true when a step is to be sent again, false once it got through
    this.started = false;
    this.attempts = 0;
    const at = performance.now();
    const opened = new Promise((resolve) => (this.#open = resolve));
    // The job's id is ours: a create sent again after its answer was lost gets the same job back.
    const job = { id: crypto.randomUUID?.(), ...fields }; // none outside a secure context: as before
    this.chain = opened.then(() => this.#send("POST", "/api/jobs", job, at)).then((made) => (this.job = made));
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

  /** The server is likely back (the page's socket rejoined): a step waiting to be sent again goes now. */
  retryNow() {
    this.#wake?.();
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

  /** Send one step until the server takes it, refuses it, or has been out of reach for RETRY_FOR_MS. */
  async #send(method, url, fields, at) {
    const since = performance.now();
    for (let failures = 1; ; failures++) {
      try {
        const data = await this.#request(method, url, fields, at, failures > 1);
        if (this.waiting) {
          this.waiting = false;
          this.onWaiting(false);
        }
        return data;
      } catch (error) {
        // The page is going, or the server said no: trying again would not change that.
        if (!(error instanceof Unreachable) || this.#leaving) throw error;
        if (performance.now() - since > RETRY_FOR_MS) {
          throw new Error(`The server could not be reached for ${RETRY_FOR_MS / 60_000} minutes.`);
        }
        if (!this.waiting) {
          this.waiting = true;
          this.onWaiting(true);
        }
        const delay = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** (failures - 1));
        await new Promise((resolve) => {
          const timer = setTimeout(resolve, delay);
          this.#wake = () => resolve(clearTimeout(timer));
        });
        this.#wake = null;
      }
    }
  }

  async #request(method, url, fields, at, again) {
    const body = JSON.stringify({ ...fields, age_ms: performance.now() - at });
    let response;
    try {
      response = await fetch(url, {
        method,
        headers: { "content-type": "application/json", accept: "application/json", "x-csrftoken": this.#csrf },
        body,
        keepalive: this.#leaving && body.length < KEEPALIVE_MAX,
      });
    } catch (error) {
      throw new Unreachable(error.message);
    }
    const data = await response.json().catch(() => ({}));
    if (UNAVAILABLE.has(response.status)) throw new Unreachable(`the server answered ${response.status}`);
    // A step sent again may have got through the first time, its answer lost: an end the job
    // already has is recorded, not refused.
    if (again && method === "PATCH" && response.status === 409 && fields.status) {
      const job = await fetch(url, { headers: { accept: "application/json" } }).then((r) => (r.ok ? r.json() : null), () => null);
      if (job?.status === fields.status) return job;
    }
    if (!response.ok) throw new Error(data.detail ?? `The server refused it (${response.status}).`);
    return data;
  }
}
