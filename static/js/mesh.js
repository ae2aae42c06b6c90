/* The room as a compute mesh: a WebRTC data channel to each other peer (signaled through
 * signaling.js), the data-channel protocol (its shapes in protocol.js), and the scheduler that
 * runs a job here or on the best peer and fails over when its worker vanishes. Protocol, cost
 * model and limits: docs/mesh.md.
 *
 *   const mesh = new Mesh(local);            // local: this page's inference (see LocalRunner below)
 *   mesh.attach(await connectRoom(slug));     // links to the room's peers
 *   const run = mesh.run(job, { mode: "auto", onToken: (text) => show(text), onAttempt });
 *   run.cancel();  const result = await run.done;
 *
 * LocalRunner, given by the page: backend() → "webgpu"|"wasm"|"", models() → [catalogue model ids],
 * warm() → [model ids], tokS() → measured tokens/s (0 = unknown), entry(model) → {id, size, backends} | null,
 * generate({id, model, prompt | messages, params, resume_text, count_resumed?}, onToken) → Promise
 * of the inference worker's "done", cancel(id).
 *
 * It serves jobs of two origins through one path (#serve): other peers' over data channels, and the
 * server's API jobs over Socket.IO (job_run / job_cancel, docs/realtime.md "API jobs").
 *
 * Events (CustomEvent): link {peer_id, username, state: connecting|open|lost|unreachable, rtt_ms},
 * work {job_id, requester, api, username, model, state: queued|running|done|cancelled|failed|lost, tokens}
 *   (api: an API job from the server, username its requester's, when the server named them),
 * lane {computing}: this page's inference worker started or stopped a generation (for whoever).
 */

import { MAX_MESSAGE_CHARS, PROTOCOL_VERSION, cleanParams, parseApiEvent, parseMessage, readCapabilities, toServer } from "/static/js/protocol.js";

// Each RTCPeerConnection costs the browser ICE, DTLS and SCTP state and a few threads; past a
// dozen peers a job gains nothing from one more candidate, so a page links to at most this many.
const MAX_CONNECTIONS = 16;
const HEARTBEAT_MS = 1000;
// Three missed heartbeats: fast enough to fail over "within a few seconds", slow enough that a
// busy tab (timers clamped to 1 s in the background) is not taken for a lost one.
const SILENCE_MS = 3500;
const CONNECT_TIMEOUT_MS = 10_000;
const RETRY_LINK_MS = 3000;
// A newcomer offers at once; if its offer got lost anyway (signaling.js keeps the ones that reach a
// page before its mesh listens), the older peer offers after this long.
const ADOPT_AFTER_MS = 3000;
const OFFER_TIMEOUT_MS = 1500;
const RESERVATION_MS = 5000;
const CANCEL_GRACE_MS = 3000;
const QUEUE_MAX = 2; // remote jobs a worker holds at once: one running, one waiting (reservations count)
const MESSAGES_PER_S = 2000; // per link; a token stream from a fast model stays far below it
// The cost model (docs/mesh.md): a remote run must beat a local one by this much to be chosen.
const REMOTE_FACTOR = 1.1;
const REMOTE_FIXED_MS = 20;
const DEFAULT_TOK_S = { webgpu: 40, wasm: 20 };
const LOAD_BASE_MS = 1500;
const LOAD_BYTES_PER_MS = 10_000; // 10 MB/s for a model this browser still has to fetch
const PREFILL_SPEEDUP = 8; // a prompt token costs about an eighth of a generated one
const RETRYABLE = new Set(["busy", "not_offered", "not_loaded", "load_failed", "webgpu_failed", "generate_failed", "restarted", "worker_failed", "internal"]);
// Why this page turns an API job down, in the words the server passes on (docs/realtime.md).
const API_DECLINED = {
  busy: "This peer already holds as many jobs as it takes.",
  not_ready: "This peer's inference worker has not started yet.",
  unknown_model: "This peer's catalogue has no such model.",
  needs_other_backend: "This model needs a backend this browser does not have.",
  duplicate: "This peer already holds a job with this id.",
};

/** The mesh's view of one other peer: its connection, channel, hello and heartbeat. */
class Link {
  constructor(mesh, peerId, initiator) {
    this.peerId = peerId;
    this.initiator = initiator;
    this.state = "connecting";
    this.hello = null; // readCapabilities() of its last hello
    this.rtt = null; // smoothed round trip, ms
    this.heardAt = performance.now();
    this.pings = new Map(); // n → {at, resolve?, reject?} of pings awaiting their pong
    this.candidates = []; // remote ICE candidates that came before the remote description
    this.budget = MESSAGES_PER_S;
    this.budgetAt = performance.now();
    this.problems = 0;
    this.pc = new RTCPeerConnection({ iceServers: mesh.iceServers });
    // Negotiated: both ends create the same channel at once, no announcement round trip.
    this.channel = this.pc.createDataChannel("mesh", { negotiated: true, id: 0, ordered: true });
    this.timeout = setTimeout(() => mesh.lose(this, "unreachable"), CONNECT_TIMEOUT_MS);
  }

  send(message) {
    if (this.channel.readyState !== "open") return false;
    const data = JSON.stringify({ v: PROTOCOL_VERSION, ...message });
    if (data.length > MAX_MESSAGE_CHARS) {
      console.warn(`mesh: not sending a ${message.type} of ${data.length} characters to ${this.peerId}`);
      return false;
    }
    try {
      this.channel.send(data);
      return true;
    } catch (error) {
      console.warn(`mesh: sending ${message.type} to ${this.peerId} failed: ${error.message}`);
      return false;
    }
  }

  /** A token bucket: a peer flooding us costs it its messages, not our page. */
  admit() {
    const now = performance.now();
    this.budget = Math.min(MESSAGES_PER_S, this.budget + ((now - this.budgetAt) * MESSAGES_PER_S) / 1000);
    this.budgetAt = now;
    if (this.budget < 1) return false;
    this.budget -= 1;
    return true;
  }

  close() {
    clearTimeout(this.timeout);
    this.state = this.state === "connecting" ? "unreachable" : "lost";
    this.channel.onopen = this.channel.onclose = this.channel.onmessage = null;
    this.pc.onicecandidate = this.pc.onconnectionstatechange = null;
    this.pc.close();
  }
}

export class Mesh extends EventTarget {
  peerId = null;
  iceServers = [];
  links = new Map(); // peer id → Link

  #local;
  #conn = null;
  #usernames = new Map(); // peer id → username, from the server's presence (not self-claimed)
  #heartbeat = null;
  #closed = false;
  #pingN = 0;
  #requests = new Map(); // job id → Request: jobs this page asked for
  #serving = new Map(); // job id → Service: jobs other peers or the server (API jobs) gave this page
  #server = null; // where an API job's tokens go: {send(message)}, as a Link takes them
  #lane = Promise.resolve(); // this page's inference worker runs one generation at a time
  #laneJobs = []; // {id, max, produced, running} of what the lane holds, for time estimates
  #status = { state: "idle", queue: 0 };

  constructor(local) {
    super();
    this.#local = local;
  }

  /** Start linking with the room's peers over `conn` (a RoomConnection from signaling.js). */
  attach(conn) {
    this.#conn = conn;
    this.peerId = conn.peerId;
    this.iceServers = conn.iceServers;
    conn.addEventListener("signal", (e) => this.#onSignal(e.detail).catch((error) => console.warn(`mesh: signal from ${e.detail.from} failed: ${error.message}`)));
    conn.addEventListener("peer_joined", (e) => {
      this.#learn(e.detail.peers);
      for (const peer of e.detail.peers) this.#adoptLater(peer.peer_id);
    });
    conn.addEventListener("peer_updated", (e) => this.#learn(e.detail.peers));
    this.#server = { send: (message) => conn.sendJob(...toServer(message, this.#local.backend())) };
    conn.addEventListener("job_run", (e) => this.#onApiRun(e.detail));
    conn.addEventListener("job_cancel", (e) => this.#onApiCancel(e.detail));
    conn.addEventListener("disconnect", () => {
      // The server has given these jobs to another peer by now; nobody is left to stream to.
      for (const service of [...this.#serving.values()]) if (service.link === this.#server) this.#stopService(service, "lost");
    });
    conn.addEventListener("peer_left", (e) => {
      for (const peerId of e.detail.peer_ids) {
        const link = this.links.get(peerId);
        if (link) this.lose(link, "left the room");
      }
    });
    conn.addEventListener("reconnect", (e) => {
      // The server gave us a new peer id: the others know us under it only, so start over.
      for (const link of [...this.links.values()]) this.lose(link, "signaling reconnected");
      this.peerId = e.detail.peer_id;
      this.iceServers = conn.iceServers;
      this.#join(e.detail.peers);
    });
    this.#heartbeat = setInterval(() => this.#beat(), HEARTBEAT_MS);
    this.#join(conn.peers);
  }

  /** Close every link (the other ends notice at once) and stop. */
  close() {
    this.#closed = true;
    clearInterval(this.#heartbeat);
    for (const link of [...this.links.values()]) this.lose(link, "this page left");
  }

  /** This page's status changed: tell the server (presence) and every linked peer (hello). */
  publish(status) {
    this.#status = status;
    this.#conn?.updateStatus(status);
    for (const link of this.links.values()) if (link.state === "open") link.send(this.#hello());
  }

  /** Whether this page's inference worker is generating, for whoever. */
  get computing() {
    return this.#laneJobs.some((job) => job.running);
  }

  /** Jobs of other peers that wait in this page's lane or hold a reservation on it. */
  get queue() {
    return [...this.#serving.values()].filter((s) => s.state !== "running").length;
  }

  usernameOf(peerId) {
    return this.#usernames.get(peerId) ?? "a peer";
  }

  /** A round trip to `peerId` over its data channel, in ms; rejects if no pong comes in time. */
  ping(peerId) {
    const link = this.links.get(peerId);
    if (!link || link.state !== "open") return Promise.reject(new Error(`no open link to ${peerId}`));
    const n = ++this.#pingN;
    return new Promise((resolve, reject) => {
      link.pings.set(n, { at: performance.now(), resolve, reject });
      link.send({ type: "ping", n });
    });
  }

  // ---- links ------------------------------------------------------------------------------

  #learn(peers) {
    for (const peer of peers) {
      const known = this.#usernames.has(peer.peer_id);
      this.#usernames.set(peer.peer_id, peer.username);
      // A peer that linked to us before its peer_joined arrived gets its name now.
      const link = this.links.get(peer.peer_id);
      if (link && !known) this.#emitLink(link);
    }
  }

  #adoptLater(peerId) {
    setTimeout(() => {
      const present = this.#conn?.peers.some((p) => p.peer_id === peerId);
      if (present && !this.#closed && !this.links.has(peerId)) {
        this.#connect(peerId).catch((error) => console.warn(`mesh: offer to ${peerId} failed: ${error.message}`));
      }
    }, ADOPT_AFTER_MS);
  }

  /** We just joined: we open the links to the peers already there, oldest first, up to the cap. */
  #join(peers) {
    this.#learn(peers);
    for (const peer of peers) this.#connect(peer.peer_id).catch((error) => console.warn(`mesh: offer to ${peer.peer_id} failed: ${error.message}`));
  }

  async #connect(peerId) {
    if (this.links.has(peerId) || peerId === this.peerId) return;
    if (this.links.size >= MAX_CONNECTIONS) {
      console.info(`mesh: at the cap of ${MAX_CONNECTIONS} links; not linking to ${peerId}`);
      return;
    }
    const link = this.#open(peerId, true);
    await link.pc.setLocalDescription();
    if (this.links.get(peerId) === link) this.#conn.signal(peerId, "offer", link.pc.localDescription);
  }

  #open(peerId, initiator) {
    const link = new Link(this, peerId, initiator);
    this.links.set(peerId, link);
    link.pc.onicecandidate = ({ candidate }) => {
      if (candidate) this.#conn.signal(peerId, "candidate", candidate);
    };
    link.pc.onconnectionstatechange = () => {
      if (["failed", "closed"].includes(link.pc.connectionState)) this.lose(link, `connection ${link.pc.connectionState}`);
    };
    link.channel.onopen = () => {
      clearTimeout(link.timeout);
      link.state = "open";
      link.heardAt = performance.now();
      link.send(this.#hello());
      this.#emitLink(link);
    };
    link.channel.onclose = () => this.lose(link, "channel closed");
    link.channel.onmessage = (event) => this.#receive(link, event.data);
    this.#emitLink(link);
    return link;
  }

  async #onSignal({ from, kind, data }) {
    let link = this.links.get(from);
    if (kind === "offer") {
      if (link && link.initiator && link.pc.signalingState === "have-local-offer") {
        // Both ends offered at once: the lower peer id keeps its offer, the other answers it.
        if (this.peerId < from) return;
        this.lose(link, "crossed offers", { quiet: true });
        link = null;
      } else if (link) {
        this.lose(link, "the peer started over", { quiet: true });
        link = null;
      }
      if (this.links.size >= MAX_CONNECTIONS) {
        console.info(`mesh: at the cap of ${MAX_CONNECTIONS} links; ignoring an offer from ${from}`);
        return;
      }
      link = this.#open(from, false);
      await link.pc.setRemoteDescription(data);
      await this.#addCandidates(link);
      await link.pc.setLocalDescription();
      if (this.links.get(from) === link) this.#conn.signal(from, "answer", link.pc.localDescription);
    } else if (kind === "answer") {
      if (!link || link.pc.signalingState !== "have-local-offer") return;
      await link.pc.setRemoteDescription(data);
      await this.#addCandidates(link);
    } else if (kind === "candidate" && link && data?.candidate) {
      link.candidates.push(data);
      if (link.pc.remoteDescription) await this.#addCandidates(link);
    }
  }

  async #addCandidates(link) {
    for (const candidate of link.candidates.splice(0)) {
      await link.pc.addIceCandidate(candidate).catch((error) => console.warn(`mesh: a candidate from ${link.peerId}: ${error.message}`));
    }
  }

  /** Drop `link`; whatever ran over it fails over (ours) or stops (theirs). */
  lose(link, why, { quiet = false } = {}) {
    if (this.links.get(link.peerId) !== link) return;
    this.links.delete(link.peerId);
    const wasOpen = link.state === "open";
    link.close();
    if (!quiet) console.info(`mesh: link to ${link.peerId} ${wasOpen ? "lost" : "not made"}: ${why}`);
    for (const request of this.#requests.values()) request.linkLost(link);
    for (const service of [...this.#serving.values()]) if (service.link === link) this.#stopService(service, "lost");
    this.#emitLink(link);
    // A glitch, not a departure: if the peer is still in the room, one side links again.
    const stillHere = () => this.#conn?.peers.some((p) => p.peer_id === link.peerId);
    if (wasOpen && !quiet && !this.#closed && this.peerId < link.peerId) {
      setTimeout(() => {
        if (stillHere()) this.#connect(link.peerId).catch(() => {});
      }, RETRY_LINK_MS);
    }
  }

  #emitLink(link) {
    const detail = { peer_id: link.peerId, username: this.usernameOf(link.peerId), state: link.state, rtt_ms: link.rtt };
    this.dispatchEvent(new CustomEvent("link", { detail }));
  }

  #beat() {
    const now = performance.now();
    for (const link of [...this.links.values()]) {
      if (link.state !== "open") continue;
      if (now - link.heardAt > SILENCE_MS) {
        this.lose(link, `silent for ${((now - link.heardAt) / 1000).toFixed(1)} s`);
        continue;
      }
      for (const [old, ping] of link.pings) {
        if (now - ping.at < SILENCE_MS) continue;
        link.pings.delete(old);
        ping.reject?.(new Error(`no pong from ${link.peerId}`));
      }
      const n = ++this.#pingN;
      link.pings.set(n, { at: now });
      link.send({ type: "ping", n });
    }
  }

  #hello() {
    const local = this.#local;
    const backend = local.backend();
    const models = backend ? this.#runnableModels(backend) : [];
    return {
      type: "hello",
      peer_id: this.peerId,
      capabilities: {
        backend,
        models,
        models_warm: local.warm(),
        state: this.#status.state ?? "idle",
        queue: this.queue,
        tok_s: local.tokS(),
      },
    };
  }

  #runnableModels(backend) {
    return this.#local.models().filter((m) => this.#local.entry(m)?.backends.includes(backend));
  }

  // ---- receiving ----------------------------------------------------------------------------

  #receive(link, data) {
    if (this.links.get(link.peerId) !== link) return;
    link.heardAt = performance.now();
    if (!link.admit()) return this.#reject(link, "more messages than the per-link rate allows");
    const { message, problem } = parseMessage(data);
    if (problem) return this.#reject(link, problem);
    switch (message.type) {
      case "ping":
        return link.send({ type: "pong", n: message.n });
      case "pong":
        return this.#onPong(link, message);
      case "hello":
        if (message.peer_id !== link.peerId) {
          this.#reject(link, `hello claims to be ${message.peer_id}`);
          return this.lose(link, "it claimed another peer's id");
        }
        link.hello = readCapabilities(message.capabilities);
        return this.#emitLink(link);
      case "job_offer":
        return this.#onOffer(link, message);
      case "job_run":
        return this.#onRun(link, message);
      case "job_cancel":
        return this.#onCancel(link, message);
      default: {
        // Answers to our own jobs: only from the peer we asked.
        const request = this.#requests.get(message.job_id);
        if (!request || !request.hears(link, message)) return this.#reject(link, `${message.type} for a job it was not given`);
      }
    }
  }

  #onPong(link, { n }) {
    const ping = link.pings.get(n);
    if (!ping) return;
    link.pings.delete(n);
    const rtt = performance.now() - ping.at;
    link.rtt = link.rtt === null ? rtt : link.rtt * 0.8 + rtt * 0.2;
    ping.resolve?.(rtt);
    this.#emitLink(link);
  }

  #reject(link, problem) {
    link.problems += 1;
    // The first few, then every hundredth: a misbehaving peer must not flood the console either.
    if (link.problems <= 5 || link.problems % 100 === 0) {
      console.warn(`mesh: ignored a message from ${link.peerId} (${this.usernameOf(link.peerId)}): ${problem} [${link.problems} so far]`);
    }
  }

  // ---- worker side: jobs other peers give us -----------------------------------------------

  /** How long until this page could start producing tokens for `model`, in ms. */
  #timeToStart(model, promptTokens) {
    const local = this.#local;
    const backend = local.backend();
    const tokS = local.tokS() || DEFAULT_TOK_S[backend] || DEFAULT_TOK_S.wasm;
    const waiting = this.#laneJobs.reduce((sum, job) => sum + Math.max(0, job.max - job.produced), 0);
    const entry = local.entry(model);
    const load = local.warm().includes(model) ? 0 : LOAD_BASE_MS + (entry?.size ?? 0) / LOAD_BYTES_PER_MS;
    return (waiting * 1000) / tokS + load + (promptTokens * 1000) / (tokS * PREFILL_SPEEDUP);
  }

  #declineReason(message) {
    const backend = this.#local.backend();
    if (message.task !== "text-generation") return "unsupported_task";
    if (!backend) return "not_ready";
    const entry = this.#local.entry(message.model);
    if (!entry) return "unknown_model";
    if (!entry.backends.includes(backend)) return "needs_other_backend";
    if (this.#serving.has(message.job_id)) return "duplicate";
    if (this.#serving.size >= QUEUE_MAX) return "busy";
    return null;
  }

  #onOffer(link, message) {
    const reason = this.#declineReason(message);
    if (reason) return link.send({ type: "job_decline", job_id: message.job_id, reason });
    const service = {
      id: message.job_id,
      link,
      requester: link.peerId,
      model: message.model,
      state: "reserved",
      tokens: 0,
      timer: setTimeout(() => this.#stopService(service, "expired"), RESERVATION_MS),
    };
    this.#serving.set(service.id, service);
    const eta = this.#timeToStart(message.model, message.prompt_tokens);
    link.send({ type: "job_accept", job_id: message.job_id, eta_ms: Math.round(eta) });
  }

  #onRun(link, message) {
    const service = this.#serving.get(message.job_id);
    if (!service || service.link !== link || service.state !== "reserved" || service.model !== message.model) {
      this.#reject(link, `job_run for ${message.job_id}, which it was not promised`);
      return link.send({ type: "job_error", job_id: message.job_id, code: "not_offered", message: "Offer the job first; this peer holds no place for it." });
    }
    clearTimeout(service.timer);
    this.#serve(service, { id: service.id, model: message.model, prompt: message.prompt, params: cleanParams(message.params), resume_text: message.resume_text ?? "" });
  }

  /** The server gives this page an API job (no offer first: the server chose from our status). */
  #onApiRun({ payload, ack }) {
    const { message, problem } = parseApiEvent("job_run", payload);
    if (problem) {
      console.warn(`mesh: refused an API job from the server: ${problem}`);
      return ack({ error: { code: "invalid", message: problem } });
    }
    const reason = this.#declineReason({ ...message, task: "text-generation" });
    if (reason) return ack({ error: { code: reason === "duplicate" ? "invalid" : reason, message: API_DECLINED[reason] } });
    const service = { id: message.job_id, link: this.#server, requester: null, username: message.username ?? "", model: message.model, tokens: 0, timer: null };
    this.#serving.set(service.id, service);
    ack({ ok: true });
    const { job_id: id, model, prompt, messages, params, resume_text = "" } = message;
    // The server asks for the tokens still to come: the resumed ones do not count against them.
    this.#serve(service, { id, model, ...(messages ? { messages } : { prompt }), params, resume_text, count_resumed: false });
  }

  /** Run `job` in this page's lane for `service`, streaming to whoever gave it (service.link: a
   * data-channel Link or the server; both take the same {type, ...} messages). */
  #serve(service, job) {
    const link = service.link;
    service.state = "queued";
    this.#emitWork(service);
    const running = this.#inLane(job, (slot) => {
      if (service.state !== "queued") return null;
      service.state = "running";
      this.#emitWork(service);
      return this.#local.generate(job, (token) => {
        slot.produced = token.seq;
        if (this.#serving.get(service.id) !== service) return;
        service.tokens = token.seq;
        link.send({ type: "token", job_id: service.id, seq: token.seq, text: token.text });
        this.#emitWork(service);
      });
    });
    running.then(
      (done) => {
        if (!done || this.#serving.get(service.id) !== service) return;
        link.send({ type: "job_done", job_id: service.id, text: done.text, metrics: this.#metricsOf(done) });
        this.#stopService(service, done.reason === "cancelled" ? "cancelled" : "done");
      },
      (error) => {
        if (this.#serving.get(service.id) !== service) return;
        link.send({ type: "job_error", job_id: service.id, code: error.code ?? "generate_failed", message: String(error.message).slice(0, 2000) });
        this.#stopService(service, "failed");
      },
    );
  }

  #metricsOf(done) {
    const { tokens = 0, resumed_tokens = 0, prompt_tokens = null, ttft_ms = null, tok_s = null, total_ms = null, reason = "" } = done;
    return { tokens, resumed_tokens, prompt_tokens, ttft_ms, tok_s, total_ms, reason, backend: this.#local.backend() };
  }

  #onCancel(link, { job_id }) {
    const service = this.#serving.get(job_id);
    if (!service || service.link !== link) return this.#reject(link, `job_cancel for ${job_id}, which is not its job here`);
    this.#cancelService(service);
  }

  #onApiCancel(payload) {
    const { message, problem } = parseApiEvent("job_cancel", payload);
    const service = message && this.#serving.get(message.job_id);
    // Already finished (its job_done crossed the cancel) or never ours: nothing to stop.
    if (problem) console.warn(`mesh: ignored a job_cancel from the server: ${problem}`);
    else if (service?.link === this.#server) this.#cancelService(service);
  }

  #cancelService(service) {
    const { id: job_id, link } = service;
    if (service.state === "running") return this.#local.cancel(job_id); // answers with job_done, reason cancelled
    if (service.state === "queued") link.send({ type: "job_done", job_id, text: "", metrics: { tokens: 0, reason: "cancelled" } });
    this.#stopService(service, service.state === "reserved" ? "released" : "cancelled");
  }

  #stopService(service, outcome) {
    if (this.#serving.get(service.id) !== service) return;
    this.#serving.delete(service.id);
    clearTimeout(service.timer);
    const wasRunning = service.state === "running";
    const shown = service.state !== "reserved";
    service.state = outcome;
    if (wasRunning && outcome === "lost") this.#local.cancel(service.id); // nobody left to stream to
    if (shown) this.#emitWork(service);
  }

  #emitWork(service) {
    const api = service.link === this.#server;
    const detail = {
      job_id: service.id,
      requester: service.requester,
      api,
      username: api ? service.username : this.usernameOf(service.requester),
      model: service.model,
      state: service.state,
      tokens: service.tokens,
    };
    this.dispatchEvent(new CustomEvent("work", { detail }));
  }

  /** Run `work(slot)` when the inference worker is free. The slot's max and produced tokens size
   * the wait quoted to others; `work` keeps `slot.produced` current. */
  #inLane(job, work) {
    const slot = { id: job.id, max: job.params.max_new_tokens ?? 128, produced: 0, running: false };
    this.#laneJobs.push(slot);
    const run = this.#lane.then(async () => {
      slot.running = true;
      const working = work(slot);
      this.#emitLane(); // after the generation is under way: telling the room can wait a moment
      return working;
    }).finally(() => {
      this.#laneJobs = this.#laneJobs.filter((j) => j !== slot);
      this.#emitLane();
    });
    this.#lane = run.catch(() => null);
    return run;
  }

  #emitLane() {
    this.dispatchEvent(new CustomEvent("lane", { detail: { computing: this.computing } }));
  }

  // ---- requester side: our jobs ------------------------------------------------------------

  /**
   * Run `job` = {id, model, prompt, params} here, on the mesh or wherever is best (mode
   * local|mesh|auto). onToken(text, tokens) gets the whole answer so far and about how many
   * tokens it holds after each token message;
   * onAttempt({worker, username, resume_text}) is called as each attempt starts (worker null =
   * this page). Returns {done, cancel()}: done resolves with {text, tokens, reason, attempts:
   * [{worker, username, outcome}], fallback} or rejects with the error that ended the job.
   */
  run(job, { mode = "auto", onToken = () => {}, onAttempt = () => {} } = {}) {
    const request = new Request(job, mode, {
      onToken,
      onAttempt,
      usernameOf: (peerId) => this.usernameOf(peerId),
      cancelHere: () => this.#local.cancel(job.id),
    });
    this.#requests.set(job.id, request);
    const done = this.#drive(request).finally(() => this.#requests.delete(job.id));
    return { done, cancel: () => request.cancel() };
  }

  async #drive(request) {
    while (true) {
      if (request.cancelled) return request.result("cancelled");
      const choice = request.mode === "local" ? null : await this.#choose(request);
      if (request.cancelled) return request.result("cancelled");
      if (!choice) return this.#runHere(request);
      const outcome = await request.runOn(choice);
      if (outcome.done) return request.finish(outcome.done);
      if (outcome.error && !RETRYABLE.has(outcome.error.code)) {
        throw Object.assign(new Error(outcome.error.message), { code: outcome.error.code, partial: request.text });
      }
      request.failedOver(choice, outcome.error ? `${outcome.error.code}: ${outcome.error.message}` : "left");
    }
  }

  /** Offer the job to every capable linked peer and pick the cheapest that accepts (or null: run here). */
  async #choose(request) {
    const { job } = request;
    const promptTokens = Math.ceil(job.prompt.length / 4); // a tokenizer-free estimate, for eta only
    const candidates = [...this.links.values()].filter(
      (link) => link.state === "open" && !request.tried.has(link.peerId) && (!link.hello || link.hello.models.includes(job.model)),
    );
    const answers = await request.offer(candidates, { job_id: job.id, model: job.model, task: "text-generation", prompt_tokens: promptTokens });
    const newTokens = Math.max(1, (job.params.max_new_tokens ?? 128) - request.resumedTokensGuess());
    const costs = answers.map(({ link, eta }) => {
      const tokS = link.hello?.tok_s || DEFAULT_TOK_S[link.hello?.backend] || DEFAULT_TOK_S.wasm;
      const cost = (eta + (link.rtt ?? 0) + (newTokens * 1000) / tokS) * REMOTE_FACTOR + REMOTE_FIXED_MS;
      return { link, cost };
    });
    costs.sort((a, b) => a.cost - b.cost || (a.link.rtt ?? 0) - (b.link.rtt ?? 0) || (a.link.peerId < b.link.peerId ? -1 : 1));
    let best = costs[0]?.link ?? null;
    if (best && request.mode === "auto" && this.#local.backend()) {
      const tokS = this.#local.tokS() || DEFAULT_TOK_S[this.#local.backend()];
      const localCost = this.#timeToStart(job.model, promptTokens) + (newTokens * 1000) / tokS;
      if (localCost <= costs[0].cost) best = null;
    }
    if (request.cancelled) best = null;
    // Whoever accepted and was not chosen keeps no place for this job.
    for (const { link } of answers) if (link !== best) link.send({ type: "job_cancel", job_id: job.id });
    // Why a mesh job runs here after all; after a failover the attempts already tell the story.
    if (!best && request.mode === "mesh" && !request.tried.size) {
      request.fallback = answers.length ? "" : candidates.length ? "declined" : "no_peers";
    }
    return best;
  }

  /** This page runs the (rest of the) job itself. */
  async #runHere(request) {
    request.startAttempt(null);
    const job = { ...request.job, params: cleanParams(request.job.params), resume_text: request.resume };
    const done = await this.#inLane(job, (slot) => {
      if (request.cancelled) return { text: "", tokens: 0, reason: "cancelled" };
      request.local = true;
      return this.#local.generate(job, (token) => {
        slot.produced = token.seq;
        request.token(token.text, token.seq);
      });
    });
    return request.finish(done);
  }
}

/** One job this page asked for: its attempts, the text so far, and the answers it waits on. */
class Request {
  text = ""; // what the person sees: the whole answer so far
  resume = ""; // the answer the current attempt continues from
  attemptText = ""; // what the current attempt added
  resumedTokens = 0;
  seq = 0; // tokens the current attempt has sent
  seqBefore = 0; // tokens earlier attempts sent
  attempts = []; // {worker, username, outcome}
  tried = new Set();
  cancelled = false;
  fallback = ""; // why a mesh job ran here: no_peers | declined
  local = false;

  #hooks; // onToken, onAttempt, usernameOf, cancelHere
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
        const answers = this.#offers.answers;
        this.#offers = null;
        resolve(answers);
      };
      this.#offers = { waiting: new Set(), answers: [], finish };
      for (const link of links) if (link.send({ type: "job_offer", ...message })) this.#offers.waiting.add(link);
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
      if (message.type === "job_accept") offers.answers.push({ link, eta: message.eta_ms });
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

  /** Send job_run to `link`; resolves with {done} | {error} | {lost}. */
  runOn(link) {
    this.startAttempt(link);
    return new Promise((resolve) => {
      this.#attempt = { link, seq: 0, resolve };
      const sent = link.send({
        type: "job_run",
        job_id: this.job.id,
        model: this.job.model,
        prompt: this.job.prompt,
        params: cleanParams(this.job.params),
        ...(this.resume ? { resume_text: this.resume } : {}),
      });
      if (!sent) this.#endAttempt({ lost: true });
    });
  }

  startAttempt(link) {
    const worker = link?.peerId ?? null;
    const username = worker ? this.#hooks.usernameOf(worker) : null;
    this.attempts.push({ worker, username, outcome: "running" });
    this.attemptText = "";
    this.seqBefore += this.seq;
    this.seq = 0;
    this.#hooks.onAttempt({ worker, username, resume_text: this.resume });
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

  /** The last attempt's "done": its text is the authority for what it added. */
  finish(done) {
    this.attemptText = done.text ?? this.attemptText;
    this.text = this.resume + this.attemptText;
    this.resumedTokens = done.resumed_tokens ?? 0;
    this.#hooks.onToken(this.text, this.seqBefore + this.seq);
    const reason = this.cancelled ? "cancelled" : done.reason ?? "";
    this.attempts.at(-1).outcome = reason === "cancelled" ? "cancelled" : "finished";
    return this.result(reason, this.resumedTokens + (done.tokens ?? 0), done);
  }

  result(reason, tokens = 0, done = {}) {
    return {
      text: this.text,
      tokens,
      reason,
      attempts: this.attempts,
      fallback: this.fallback,
      ttft_ms: done.ttft_ms ?? null,
      tok_s: done.tok_s ?? null,
    };
  }
}
