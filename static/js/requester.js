/* The requester side: where each attempt of this page's own jobs runs — here, or on the linked
 * peer the cost model (docs/mesh.md) says finishes first — and failing over when a worker drops. */

import { DEFAULT_TOK_S } from "/static/js/lane.js";
import { cleanParams } from "/static/js/protocol.js";
import { RequestedJob } from "/static/js/requested-job.js";

// A remote run must beat a local one by this much to be chosen.
const REMOTE_FACTOR = 1.1;
const REMOTE_FIXED_MS = 20;
const RETRYABLE = new Set(["busy", "not_offered", "not_loaded", "load_failed", "webgpu_failed", "generate_failed", "restarted", "worker_failed", "internal"]);

export class Requester {
  #jobs = new Map(); // job id → RequestedJob
  #local;
  #lane;
  #hooks; // links() → the mesh's open and opening Links, nameOf(peerId)

  constructor(local, lane, hooks) {
    this.#local = local;
    this.#lane = lane;
    this.#hooks = hooks;
  }

  /** See Mesh.run. */
  run(job, { mode = "auto", onToken = () => {}, onAttempt = () => {}, onTrace = () => {} } = {}) {
    const requested = new RequestedJob(job, mode, {
      onToken,
      onAttempt,
      onTrace,
      nameOf: this.#hooks.nameOf,
      cancelHere: () => this.#local.cancel(job.id),
    });
    this.#jobs.set(job.id, requested);
    const done = this.#drive(requested).finally(() => this.#jobs.delete(job.id));
    return { done, cancel: () => requested.cancel() };
  }

  /** An answer from `link` about one of our jobs; false when it has no business sending it. */
  hears(link, message) {
    const requested = this.#jobs.get(message.job_id);
    return Boolean(requested?.hears(link, message));
  }

  linkLost(link) {
    for (const requested of this.#jobs.values()) requested.linkLost(link);
  }

  async #drive(requested) {
    while (true) {
      if (requested.cancelled) return requested.result("cancelled");
      const choice = requested.mode === "local" ? null : await this.#choose(requested);
      if (requested.cancelled) return requested.result("cancelled");
      if (!choice) return this.#runHere(requested);
      const outcome = await requested.runOn(choice);
      if (outcome.done) return requested.finish(outcome.done);
      if (outcome.error && !RETRYABLE.has(outcome.error.code)) {
        throw Object.assign(new Error(outcome.error.message), { code: outcome.error.code, partial: requested.text });
      }
      // Why: its channel closed, it went silent (links.js), or it answered with an error.
      requested.failedOver(choice, outcome.error ? `error: ${outcome.error.code}: ${outcome.error.message}` : choice.lostWhy ?? "closed");
    }
  }

  /** Offer the job to every capable linked peer and pick the cheapest that accepts (or null: run here). */
  async #choose(requested) {
    const { job } = requested;
    const promptTokens = Math.ceil(job.prompt.length / 4); // a tokenizer-free estimate, for eta only
    const open = [...this.#hooks.links()].filter(
      (link) => link.state === "open" && !requested.tried.has(link.peerId) && !requested.refused.has(link.peerId),
    );
    // A peer whose hello says it is paused is not offered the job at all (it would only decline),
    // but the person hears about it if the job runs here for want of peers.
    const paused = open.filter((link) => link.hello?.state === "paused");
    for (const link of paused) {
      const why = link.hello.pause_reason;
      requested.declined(link.peerId, { reason: why === "sharing_off" ? "sharing_off" : `paused:${why}` });
    }
    const candidates = open.filter((link) => !paused.includes(link) && (!link.hello || link.hello.models.includes(job.model)));
    const answers = await requested.offer(candidates, { job_id: job.id, model: job.model, task: "text-generation", prompt_tokens: promptTokens });
    const newTokens = Math.max(1, (job.params.max_new_tokens ?? 128) - requested.resumedTokensGuess());
    const costs = answers.map(({ link, eta }) => {
      const tokS = link.hello?.tok_s || DEFAULT_TOK_S[link.hello?.backend] || DEFAULT_TOK_S.wasm;
      const cost = (eta + (link.rtt ?? 0) + (newTokens * 1000) / tokS) * REMOTE_FACTOR + REMOTE_FIXED_MS;
      return { link, cost };
    });
    costs.sort((a, b) => a.cost - b.cost || (a.link.rtt ?? 0) - (b.link.rtt ?? 0) || (a.link.peerId < b.link.peerId ? -1 : 1));
    let best = costs[0]?.link ?? null;
    if (best && requested.mode === "auto" && this.#local.backend()) {
      const tokS = this.#local.tokS() || DEFAULT_TOK_S[this.#local.backend()];
      const localCost = this.#lane.timeToStart(this.#local, job.model, promptTokens) + (newTokens * 1000) / tokS;
      if (localCost <= costs[0].cost) best = null;
    }
    if (requested.cancelled) best = null;
    // Whoever accepted and was not chosen keeps no place for this job.
    for (const { link } of answers) if (link !== best) link.send({ type: "job_cancel", job_id: job.id });
    // Why a mesh job runs here after all; after a failover the attempts already tell the story.
    if (!best && requested.mode === "mesh" && !requested.tried.size) {
      requested.fallback = answers.length ? "" : candidates.length ? "declined" : "no_peers";
    }
    return best;
  }

  /** This page runs the (rest of the) job itself. */
  async #runHere(requested) {
    requested.startAttempt(null);
    const job = { ...requested.job, params: cleanParams(requested.job.params), resume_text: requested.resume };
    const done = await this.#lane.add(job, (slot) => {
      if (requested.cancelled) return { text: "", tokens: 0, reason: "cancelled" };
      requested.local = true;
      return this.#local.generate(job, (token) => {
        slot.produced = token.seq;
        requested.token(token.text, token.seq);
      });
    });
    return requested.finish(done);
  }
}
