/* One job this page asked for: its attempts, the text so far, the offers and the attempt it waits
 * on. requester.js decides where each attempt runs; this keeps the job's story straight. */

import { cleanParams } from "/static/js/protocol.js";

const OFFER_TIMEOUT_MS = 1500;
const CANCEL_GRACE_MS = 3000;
// Declines that will not change for this job: that peer is not offered it again after a failover.
const FINAL_DECLINES = new Set(["too_large", "unknown_model", "needs_other_backend", "unsupported_task"]);
const PAUSED = { hidden: "its tab is hidden", battery: "its battery is low", device_lost: "its GPU was lost" };

/** A peer's decline ({reason, limit_mb?}) in the words the person reads. */
export function whyDeclined({ reason, limit_mb }) {
  if (reason === "sharing_off") return "sharing is off";
  if (reason.startsWith("paused:")) return `paused, ${PAUSED[reason.slice(7)] ?? "for now"}`;
  if (reason === "too_large") {
    return limit_mb ? `model over its ${limit_mb} MB download limit` : "model not loaded there, and it downloads nothing for others";
  }
  return {
    busy: "busy with other jobs",
    not_ready: "not ready yet",
    unknown_model: "does not have this model",
    needs_other_backend: "this model needs a backend it lacks",
  }[reason] ?? reason;
}

export class RequestedJob {
  text = ""; // what the person sees: the whole answer so far
  resume = ""; // the answer the current attempt continues from
  attemptText = ""; // what the current attempt added
  resumedTokens = 0;
  seq = 0; // tokens the current attempt has sent
  seqBefore = 0; // tokens earlier attempts sent
  attempts = []; // {worker, name, outcome}: name as mesh.nameOf says it
  tried = new Set();
  declines = new Map(); // peer id → {name, reason, limit_mb?}: who would not take it, latest first
  refused = new Set(); // peers whose decline holds for the whole job (FINAL_DECLINES)
  cancelled = false;
  fallback = ""; // why a mesh job ran here: no_peers | declined
  local = false;

  #hooks; // onToken, onAttempt, onTrace(kind, fields), nameOf, cancelHere
  #offers = null; // {waiting: Map link → true, answers: [], resolve}
  #attempt = null; // {link, seq, resolve}
  #cancelTimer = null;

  constructor(job, mode, hooks) {
    this.job = job;
    this.mode = mode;
    this.#hooks = hooks;
  }

  /** Send the offer to `links` and collect accepts until all answered or the window closes. */
  offer(links, message) {
    if (!links.length) return Promise.resolve([]);
    return new Promise((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        for (const link of this.#offers.waiting) this.#hooks.onTrace("declined", { peer: link.peerId, reason: "no answer in time" });
        const answers = this.#offers.answers;
        this.#offers = null;
        resolve(answers);
      };
      this.#offers = { waiting: new Set(), answers: [], finish };
      for (const link of links) {
        if (!link.send({ type: "job_offer", ...message })) continue;
        this.#offers.waiting.add(link);
        this.#hooks.onTrace("offered", { peer: link.peerId });
      }
      const timer = setTimeout(finish, OFFER_TIMEOUT_MS);
      if (!this.#offers.waiting.size) finish();
    });
  }

  /** An answer about this job from `link`; false when `link` has no business sending it. */
  hears(link, message) {
    const offers = this.#offers;
    if (message.type === "job_accept" || message.type === "job_decline") {
      if (!offers?.waiting.has(link)) return false;
      offers.waiting.delete(link);
      if (message.type === "job_accept") {
        offers.answers.push({ link, eta: message.eta_ms });
        this.#hooks.onTrace("accepted", { peer: link.peerId, eta_ms: message.eta_ms });
      } else this.declined(link.peerId, message);
      if (!offers.waiting.size) offers.finish();
      return true;
    }
    const attempt = this.#attempt;
    if (!attempt || attempt.link !== link) return false;
    if (message.type === "token") {
      // seq never decreases; the same seq again carries text those tokens completed later (the
      // streamer's last flush of a word it held back).
      if (message.seq < attempt.seq) return false;
      attempt.seq = message.seq;
      this.token(message.text, message.seq);
    } else if (message.type === "job_done") {
      this.#endAttempt({ done: { ...message.metrics, text: message.text } });
    } else if (message.type === "job_error") {
      this.#endAttempt({ error: { code: message.code, message: message.message } });
    }
    return true;
  }

  /** `peerId` will not take this job (it declined, or its hello says it is paused), and why. */
  declined(peerId, { reason, limit_mb }) {
    this.declines.set(peerId, { name: this.#hooks.nameOf(peerId), reason, limit_mb });
    this.#hooks.onTrace("declined", { peer: peerId, reason: limit_mb === undefined ? reason : `${reason} (${limit_mb} MB)` });
    if (FINAL_DECLINES.has(reason)) this.refused.add(peerId);
  }

  /** "alice's browser: sharing is off; bob's browser: model over its 50 MB download limit". */
  whyNobody() {
    return [...this.declines.values()].map((d) => `${d.name}: ${whyDeclined(d)}`).join("; ");
  }

  /** Send job_run to `link`; resolves with {done} | {error} | {lost}. */
  runOn(link) {
    this.startAttempt(link);
    return new Promise((resolve) => {
      this.#attempt = { link, seq: 0, resolve };
      const sent = link.send({
        type: "job_run",
        job_id: this.job.id,
        model: this.job.model,
        ...(this.job.messages ? { messages: this.job.messages } : { prompt: this.job.prompt }),
        params: cleanParams(this.job.params),
        ...(this.resume ? { resume_text: this.resume } : {}),
      });
      if (!sent) this.#endAttempt({ lost: true });
    });
  }

  startAttempt(link) {
    const worker = link?.peerId ?? null;
    const name = worker ? this.#hooks.nameOf(worker) : null;
    this.attempts.push({ worker, name, outcome: "running" });
    this.attemptText = "";
    this.seqBefore += this.seq;
    this.seq = 0;
    this.#hooks.onAttempt({ worker, name, resume_text: this.resume });
  }

  linkLost(link) {
    if (this.#offers?.waiting.has(link)) {
      this.#offers.waiting.delete(link);
      if (!this.#offers.waiting.size) this.#offers.finish();
    }
    if (this.#attempt?.link === link) this.#endAttempt({ lost: true });
  }

  /** The attempt's worker is gone or failed: continue from a clean word boundary. */
  failedOver(link, why) {
    this.tried.add(link.peerId);
    this.attempts.at(-1).outcome = why;
    this.#hooks.onTrace("failover", { attempt: this.attempts.length, peer: link.peerId, reason: why, tokens: this.seqBefore + this.seq });
    // The streamed text ends where the worker's streamer last printed, usually after a space.
    // Re-tokenising a trailing space would give the model a token it never produced, so the next
    // attempt resumes from the last whole word and regenerates the space itself.
    this.resume = this.text.trimEnd();
  }

  /** A token's text arrived (from a peer or from this page's worker). */
  token(piece, seq) {
    this.attemptText += piece;
    this.seq = seq;
    const full = this.resume + this.attemptText;
    // Until a resumed attempt has re-sent the whitespace that resume_text left off, keep showing it.
    if (!(full.length < this.text.length && this.text.startsWith(full))) this.text = full;
    this.#hooks.onToken(this.text, this.seqBefore + seq);
  }

  resumedTokensGuess() {
    return this.resume ? Math.ceil(this.resume.length / 4) : 0;
  }

  cancel() {
    if (this.cancelled) return;
    this.cancelled = true;
    this.#offers?.finish();
    const attempt = this.#attempt;
    if (attempt) {
      attempt.link.send({ type: "job_cancel", job_id: this.job.id });
      // A worker that never confirms still stops counting for us after a grace period.
      this.#cancelTimer = setTimeout(() => this.#endAttempt({ done: { reason: "cancelled", text: this.attemptText, tokens: attempt.seq } }), CANCEL_GRACE_MS);
    } else if (this.local) {
      this.#hooks.cancelHere();
    }
  }

  #endAttempt(outcome) {
    const attempt = this.#attempt;
    if (!attempt) return;
    this.#attempt = null;
    clearTimeout(this.#cancelTimer);
    if (outcome.lost && this.cancelled) outcome = { done: { reason: "cancelled", text: this.attemptText, tokens: attempt.seq } };
    attempt.resolve(outcome);
  }

  /** The last attempt's "done": its text and its count are the authority for the whole answer.
   * After a failover the streamed count (earlier attempts' tokens plus this one's) can run past
   * the job's max_new_tokens: the resumed text re-tokenises to fewer tokens than were streamed
   * (its trailing space, at least), and the worker's budget counts those. */
  finish(done) {
    this.attemptText = done.text ?? this.attemptText;
    this.text = this.resume + this.attemptText;
    this.resumedTokens = done.resumed_tokens ?? 0;
    const tokens = this.resumedTokens + (done.tokens ?? 0);
    this.#hooks.onToken(this.text, tokens);
    const reason = this.cancelled ? "cancelled" : done.reason ?? "";
    this.attempts.at(-1).outcome = reason === "cancelled" ? "cancelled" : "finished";
    return this.result(reason, tokens, done);
  }

  result(reason, tokens = 0, done = {}) {
    return {
      text: this.text,
      tokens,
      reason,
      attempts: this.attempts,
      fallback: this.fallback,
      // Why each peer that was asked (or skipped as paused) did not take it, when it ran here instead.
      declined: this.fallback ? this.whyNobody() : "",
      ttft_ms: done.ttft_ms ?? null,
      tok_s: done.tok_s ?? null,
      // How the last attempt's worker spent its time (inference.js "done", peer.js load_ms and warm).
      load_ms: done.load_ms ?? null,
      warm: done.warm ?? null,
      total_ms: done.total_ms ?? null,
    };
  }
}
