/* The room as a compute mesh: a data-channel Link (link.js) to each other peer, made through
 * signaling.js, with the messages routed to the serving side (serving.js: jobs others give this
 * page) and the requester side (requester.js: this page's own jobs, here or on the best peer).
 * Protocol, cost model and limits: docs/mesh.md; message shapes: protocol.js.
 *
 *   const mesh = new Mesh(local);            // local: this page's inference (see LocalRunner below)
 *   mesh.attach(await connectRoom(slug));     // links to the room's peers
 *   const run = mesh.run(job, { mode: "auto", onToken: (text) => show(text), onAttempt });
 *   run.cancel();  const result = await run.done;
 *
 * LocalRunner, given by the page: backend() → "webgpu"|"wasm"|"", models() → [catalogue model ids],
 * warm() → [model ids], tokS() → measured tokens/s (0 = unknown), entry(model) → {id, size, backends} | null,
 * generate({id, model, prompt | messages, params, resume_text, count_resumed?}, onToken) → Promise
 * of the inference worker's "done", cancel(id), sharing() → {share, download_mb, max_jobs} (the
 * user's choice), paused() → null | sharing_off | hidden | battery | device_lost (pause.js).
 *
 * Events (CustomEvent): link {peer_id, username, state: connecting|open|lost|unreachable, rtt_ms},
 * work {job_id, requester, api, username, model, state: queued|running|done|cancelled|failed|lost, tokens}
 *   (api: an API job from the server, username its requester's, when the server named them),
 * lane {computing}: this page's inference worker started or stopped a generation (for whoever).
 */

import { InferenceLane } from "/static/js/lane.js";
import { Link } from "/static/js/link.js";
import { parseMessage, readCapabilities, toServer } from "/static/js/protocol.js";
import { Requester } from "/static/js/requester.js";
import { Serving } from "/static/js/serving.js";

// Each RTCPeerConnection costs the browser ICE, DTLS and SCTP state and a few threads; past a
// dozen peers a job gains nothing from one more candidate, so a page links to at most this many.
const MAX_CONNECTIONS = 16;
const HEARTBEAT_MS = 1000;
// Three missed heartbeats: fast enough to fail over "within a few seconds", slow enough that a
// busy tab (timers clamped to 1 s in the background) is not taken for a lost one.
const SILENCE_MS = 3500;
const RETRY_LINK_MS = 3000;
// A newcomer offers at once; if its offer got lost anyway (signaling.js keeps the ones that reach a
// page before its mesh listens), the older peer offers after this long.
const ADOPT_AFTER_MS = 3000;

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
  #lane;
  #serving;
  #requester;
  #status = { state: "idle", queue: 0 };

  constructor(local) {
    super();
    this.#local = local;
    this.#lane = new InferenceLane(() => this.dispatchEvent(new CustomEvent("lane", { detail: { computing: this.computing } })));
    const usernameOf = (peerId) => this.usernameOf(peerId);
    this.#serving = new Serving(local, this.#lane, {
      usernameOf,
      reject: (link, problem) => this.#reject(link, problem),
      emitWork: (detail) => this.dispatchEvent(new CustomEvent("work", { detail })),
    });
    this.#requester = new Requester(local, this.#lane, { usernameOf, links: () => this.links.values() });
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
    this.#serving.server = { send: (message) => conn.sendJob(...toServer(message, this.#local.backend())) };
    conn.addEventListener("job_run", (e) => this.#serving.runApi(e.detail));
    conn.addEventListener("job_cancel", (e) => this.#serving.cancelApi(e.detail));
    // The server has given these jobs to another peer by now; nobody is left to stream to.
    conn.addEventListener("disconnect", () => this.#serving.dropLink(this.#serving.server));
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
    return this.#lane.computing;
  }

  /** Jobs of other peers that wait in this page's lane or hold a reservation on it. */
  get queue() {
    return this.#serving.queue;
  }

  usernameOf(peerId) {
    return this.#usernames.get(peerId) ?? "a peer";
  }

  /**
   * Run `job` = {id, model, prompt, params} here, on the mesh or wherever is best (mode
   * local|mesh|auto). onToken(text, tokens) gets the whole answer so far and about how many
   * tokens it holds after each token message;
   * onAttempt({worker, username, resume_text}) is called as each attempt starts (worker null =
   * this page). Returns {done, cancel()}: done resolves with {text, tokens, reason, attempts:
   * [{worker, username, outcome}], fallback} or rejects with the error that ended the job.
   */
  run(job, options) {
    return this.#requester.run(job, options);
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
    const link = new Link(peerId, initiator, this.iceServers, (l) => this.lose(l, "unreachable"));
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
    this.#requester.linkLost(link);
    this.#serving.dropLink(link);
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
        pause_reason: this.#status.pause_reason ?? null,
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
        if (link.ponged(message.n)) this.#emitLink(link);
        return;
      case "hello":
        if (message.peer_id !== link.peerId) {
          this.#reject(link, `hello claims to be ${message.peer_id}`);
          return this.lose(link, "it claimed another peer's id");
        }
        link.hello = readCapabilities(message.capabilities);
        return this.#emitLink(link);
      case "job_offer":
        return this.#serving.offered(link, message);
      case "job_run":
        return this.#serving.run(link, message);
      case "job_cancel":
        return this.#serving.cancel(link, message);
      default:
        // Answers to our own jobs: only from the peer we asked.
        if (!this.#requester.hears(link, message)) return this.#reject(link, `${message.type} for a job it was not given`);
    }
  }

  #reject(link, problem) {
    link.problems += 1;
    // The first few, then every hundredth: a misbehaving peer must not flood the console either.
    if (link.problems <= 5 || link.problems % 100 === 0) {
      console.warn(`mesh: ignored a message from ${link.peerId} (${this.usernameOf(link.peerId)}): ${problem} [${link.problems} so far]`);
    }
  }
}
