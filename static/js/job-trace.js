/* A job's trace as this page witnesses it (docs/inference.md, "Traces"): timestamped events and the
 * tokens that arrived in each 100 ms, within the caps the server keeps (jobs/trace.py, handed down in
 * `job-limits`). Adding to it is a push and a little arithmetic: it never holds up a token. */

import { JOB_LIMITS } from "/static/js/protocol.js";

const BUCKET_MS = 100;
const ENDS = new Set(["done", "error", "cancel"]);
const OFFERS = new Set(["offered", "accepted", "declined"]);

/** tok/s on the run's own clock, or null when the run is too short to measure honestly. */
export function honestTokS(decodeMs, decodeTokens) {
  if (decodeMs < JOB_LIMITS.speed_min_decode_ms || decodeTokens < JOB_LIMITS.speed_min_decode_tokens) return null;
  return (decodeTokens * 1000) / decodeMs;
}

export class JobTrace {
  events = [];
  #t0;
  #series = null; // {start_ms, bucket_ms, counts}

  constructor(t0 = performance.now()) {
    this.#t0 = t0;
    this.add("created", {}, t0);
  }

  /** Record `kind` with its fields, as of `at` (performance.now() clock). The last slot is kept for
   * the job's end, so a long run that used up the cap still says how it finished. */
  add(kind, fields = {}, at = performance.now()) {
    if (this.events.length >= JOB_LIMITS.trace_max_events - (ENDS.has(kind) ? 0 : 1)) return;
    if (fields.attempt > JOB_LIMITS.trace_max_attempt) return;
    const event = { t: this.#ms(at), kind };
    for (const [key, value] of Object.entries(fields)) if (value !== undefined && value !== null) event[key] = value;
    if (typeof event.reason === "string") event.reason = event.reason.slice(0, 200);
    this.events.push(event);
  }

  /** `n` tokens arrived at `at`. Past the cap, neighbouring buckets merge (each twice as wide). */
  tokens(n, at = performance.now()) {
    const t = this.#ms(at);
    if (!this.#series) this.#series = { start_ms: t, bucket_ms: BUCKET_MS, counts: [] };
    const series = this.#series;
    let i = Math.floor((t - series.start_ms) / series.bucket_ms);
    while (i >= JOB_LIMITS.trace_max_buckets) {
      const merged = [];
      for (let j = 0; j < series.counts.length; j += 2) merged.push(series.counts[j] + (series.counts[j + 1] ?? 0));
      series.counts = merged;
      series.bucket_ms *= 2;
      i = Math.floor((t - series.start_ms) / series.bucket_ms);
    }
    while (series.counts.length <= i) series.counts.push(0);
    series.counts[i] += n;
  }

  /** The trace as PATCH /api/jobs takes it: events in time order, within the byte cap (offers go
   * first if it would not fit, then everything but the attempts' milestones). */
  toJSON() {
    let events = [...this.events].sort((a, b) => a.t - b.t);
    const body = () => ({ events, ...(this.#series ? { tokens: this.#series } : {}) });
    const fits = () => new TextEncoder().encode(JSON.stringify(body())).length <= JOB_LIMITS.trace_max_bytes;
    if (!fits()) events = events.filter((event) => !OFFERS.has(event.kind));
    if (!fits()) events = events.filter((event) => event.kind !== "first_token" || event.attempt === 1).map(({ reason, ...event }) => event);
    return body();
  }

  /** The performance.now() time of `ms` into the trace. */
  at(ms) {
    return this.#t0 + ms;
  }

  #ms(at) {
    return Math.max(0, Math.round((at - this.#t0) * 10) / 10);
  }
}
