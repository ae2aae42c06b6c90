/* The serving side: jobs other peers give this page over data channels (offer, reservation, run,
 * cancel) and the server's API jobs over Socket.IO (docs/realtime.md "API jobs"), both run through
 * one path (#serve) in this page's inference lane. */

import { cleanParams, parseApiEvent } from "/static/js/protocol.js";

const RESERVATION_MS = 5000;
const MB = 1e6; // as the model picker counts them
// Why this page turns an API job down, in the words the server passes on (docs/realtime.md).
const API_DECLINED = {
  sharing_off: "This peer's user does not share this device.",
  paused: "This peer has paused serving for now.",
  too_large: "This model is not loaded on this peer and is over what it downloads for others.",
  busy: "This peer already holds as many jobs as it takes.",
  not_ready: "This peer's inference worker has not started yet.",
  unknown_model: "This peer's catalogue has no such model.",
  needs_other_backend: "This model needs a backend this browser does not have.",
  duplicate: "This peer already holds a job with this id.",
};

export class Serving {
  /** Where an API job's tokens go: {send(message)}, as a Link takes them; set by the mesh. */
  server = null;

  #jobs = new Map(); // job id → service {id, link, requester, username?, model, state, tokens, timer}
  #local;
  #lane;
  #hooks; // usernameOf(peerId), reject(link, problem), emitWork(detail)

  constructor(local, lane, hooks) {
    this.#local = local;
    this.#lane = lane;
    this.#hooks = hooks;
  }

  /** The jobs this page runs now: {model, requester} (requester null: an API job from the server). */
  get running() {
    return [...this.#jobs.values()].filter((s) => s.state === "running").map((s) => ({ model: s.model, requester: s.requester }));
  }

  /** Jobs of other peers that wait in this page's lane or hold a reservation on it. */
  get queue() {
    return [...this.#jobs.values()].filter((s) => s.state !== "running").length;
  }

  /** Why this page turns the job down ({reason, limit_mb?}), or null. Sharing and pauses first:
   * a page its user does not share answers nothing else about itself. */
  #declineReason(message) {
    const sharing = this.#local.sharing();
    const paused = this.#local.paused();
    if (!sharing.share || paused === "sharing_off") return { reason: "sharing_off" };
    if (paused) return { reason: `paused:${paused}` };
    const backend = this.#local.backend();
    if (message.task !== "text-generation") return { reason: "unsupported_task" };
    if (!backend) return { reason: "not_ready" };
    const entry = this.#local.entry(message.model);
    if (!entry) return { reason: "unknown_model" };
    if (!entry.backends.includes(backend)) return { reason: "needs_other_backend" };
    if (this.#jobs.has(message.job_id)) return { reason: "duplicate" };
    // Before busy: this one will not change by waiting, so the requester need not ask again.
    if (!this.#local.warm().includes(entry.id) && entry.size > sharing.download_mb * MB) {
      return { reason: "too_large", limit_mb: sharing.download_mb };
    }
    if (this.#jobs.size >= sharing.max_jobs) return { reason: "busy" };
    return null;
  }

  /** A job_offer from `link`: decline, or hold a place for it and quote when it could start. */
  offered(link, message) {
    const declined = this.#declineReason(message);
    if (declined) return link.send({ type: "job_decline", job_id: message.job_id, ...declined });
    const service = {
      id: message.job_id,
      link,
      requester: link.peerId,
      model: message.model,
      state: "reserved",
      tokens: 0,
      timer: setTimeout(() => this.#stop(service, "expired"), RESERVATION_MS),
    };
    this.#jobs.set(service.id, service);
    const eta = this.#lane.timeToStart(this.#local, message.model, message.prompt_tokens);
    link.send({ type: "job_accept", job_id: message.job_id, eta_ms: Math.round(eta) });
  }

  /** A job_run from `link`, for a place it holds. */
  run(link, message) {
    const service = this.#jobs.get(message.job_id);
    if (!service || service.link !== link || service.state !== "reserved" || service.model !== message.model) {
      this.#hooks.reject(link, `job_run for ${message.job_id}, which it was not promised`);
      return link.send({ type: "job_error", job_id: message.job_id, code: "not_offered", message: "Offer the job first; this peer holds no place for it." });
    }
    clearTimeout(service.timer);
    const { prompt, messages } = message;
    this.#serve(service, { id: service.id, model: message.model, ...(messages ? { messages } : { prompt }), params: cleanParams(message.params), resume_text: message.resume_text ?? "" });
  }

  /** The server gives this page an API job (no offer first: the server chose from our status). */
  runApi({ payload, ack }) {
    const { message, problem } = parseApiEvent("job_run", payload);
    if (problem) {
      console.warn(`mesh: refused an API job from the server: ${problem}`);
      return ack({ error: { code: "invalid", message: problem } });
    }
    const declined = this.#declineReason({ ...message, task: "text-generation" });
    if (declined) {
      const [code, why] = declined.reason.split(":");
      const detail = why ?? (declined.limit_mb === undefined ? "" : `${declined.limit_mb} MB`);
      return ack({ error: { code: code === "duplicate" ? "invalid" : code, message: detail ? `${API_DECLINED[code]} (${detail})` : API_DECLINED[code] } });
    }
    const service = { id: message.job_id, link: this.server, requester: null, username: message.username ?? "", model: message.model, tokens: 0, timer: null };
    this.#jobs.set(service.id, service);
    ack({ ok: true });
    const { job_id: id, model, prompt, messages, params, resume_text = "" } = message;
    // The server asks for the tokens still to come: the resumed ones do not count against them.
    this.#serve(service, { id, model, ...(messages ? { messages } : { prompt }), params, resume_text, count_resumed: false });
  }

  /** A job_cancel from `link`. */
  cancel(link, { job_id }) {
    const service = this.#jobs.get(job_id);
    if (!service || service.link !== link) return this.#hooks.reject(link, `job_cancel for ${job_id}, which is not its job here`);
    this.#cancelService(service);
  }

  /** The server cancels an API job. */
  cancelApi(payload) {
    const { message, problem } = parseApiEvent("job_cancel", payload);
    const service = message && this.#jobs.get(message.job_id);
    // Already finished (its job_done crossed the cancel) or never ours: nothing to stop.
    if (problem) console.warn(`mesh: ignored a job_cancel from the server: ${problem}`);
    else if (service?.link === this.server) this.#cancelService(service);
  }

  /** Whoever gave these jobs is gone (`link`, or the server): stop them, nobody is left to stream to. */
  dropLink(link) {
    for (const service of [...this.#jobs.values()]) if (service.link === link) this.#stop(service, "lost");
  }

  /** Run `job` in this page's lane for `service`, streaming to whoever gave it (service.link: a
   * data-channel Link or the server; both take the same {type, ...} messages). */
  #serve(service, job) {
    const link = service.link;
    service.state = "queued";
    this.#emitWork(service);
    const running = this.#lane.add(job, (slot) => {
      if (service.state !== "queued") return null;
      service.state = "running";
      this.#emitWork(service);
      return this.#local.generate(job, (token) => {
        slot.produced = token.seq;
        if (this.#jobs.get(service.id) !== service) return;
        service.tokens = token.seq;
        link.send({ type: "token", job_id: service.id, seq: token.seq, text: token.text });
        this.#emitWork(service);
      });
    });
    running.then(
      (done) => {
        if (!done || this.#jobs.get(service.id) !== service) return;
        link.send({ type: "job_done", job_id: service.id, text: done.text, metrics: this.#metricsOf(done) });
        this.#stop(service, done.reason === "cancelled" ? "cancelled" : "done");
      },
      (error) => {
        if (this.#jobs.get(service.id) !== service) return;
        link.send({ type: "job_error", job_id: service.id, code: error.code ?? "generate_failed", message: String(error.message).slice(0, 2000) });
        this.#stop(service, "failed");
      },
    );
  }

  #metricsOf(done) {
    const { tokens = 0, resumed_tokens = 0, prompt_tokens = null, ttft_ms = null, tok_s = null, total_ms = null, load_ms = null, warm = null, reason = "" } = done;
    return { tokens, resumed_tokens, prompt_tokens, ttft_ms, tok_s, total_ms, load_ms, warm, reason, backend: this.#local.backend() };
  }

  #cancelService(service) {
    const { id: job_id, link } = service;
    if (service.state === "running") return this.#local.cancel(job_id); // answers with job_done, reason cancelled
    if (service.state === "queued") link.send({ type: "job_done", job_id, text: "", metrics: { tokens: 0, reason: "cancelled" } });
    this.#stop(service, service.state === "reserved" ? "released" : "cancelled");
  }

  #stop(service, outcome) {
    if (this.#jobs.get(service.id) !== service) return;
    this.#jobs.delete(service.id);
    clearTimeout(service.timer);
    const wasRunning = service.state === "running";
    const shown = service.state !== "reserved";
    service.state = outcome;
    if (wasRunning && outcome === "lost") this.#local.cancel(service.id); // nobody left to stream to
    if (shown) this.#emitWork(service);
  }

  #emitWork(service) {
    const api = service.link === this.server;
    this.#hooks.emitWork({
      job_id: service.id,
      requester: service.requester,
      api,
      username: api ? service.username : this.#hooks.usernameOf(service.requester),
      model: service.model,
      state: service.state,
      tokens: service.tokens,
    });
  }
}
