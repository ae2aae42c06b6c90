/* The room as a compute mesh: a data-channel Link (link.js) to each other peer, made and kept by
 * links.js through signaling.js, with the messages routed to the serving side (serving.js: jobs
 * others give this page) and the requester side (requester.js: this page's own jobs, here or on
 * the best peer).
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
import { Links } from "/static/js/links.js";
import { parseMessage, readCapabilities, toServer } from "/static/js/protocol.js";
import { Requester } from "/static/js/requester.js";
import { Serving } from "/static/js/serving.js";

// A headless worker's backends (catalogue.WORKER_BACKENDS on the server): a peer that is no browser.
const WORKER_BACKENDS = new Set(["onnxruntime-cpu", "onnxruntime-cuda"]);

export class Mesh extends EventTarget {
  #local;
  #conn = null;
  #links;
  #usernames = new Map(); // peer id → username, from the server's presence (not self-claimed)
  #workers = new Set(); // peer ids of headless workers (their backend is ONNX Runtime's, not a browser's)
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
    this.#requester = new Requester(local, this.#lane, { nameOf: (peerId) => this.nameOf(peerId), links: () => this.links.values() });
    this.#links = new Links({
      opened: (link) => {
        link.send(this.#hello());
        this.#emitLink(link);
      },
      message: (link, data) => this.#receive(link, data),
      lost: (link) => {
        this.#requester.linkLost(link);
        this.#serving.dropLink(link);
        this.#emitLink(link);
      },
      changed: (link) => this.#emitLink(link),
    });
  }

  /** This page's peer id in the room (a new one after each reconnect); null until it joined. */
  get peerId() {
    return this.#links.peerId;
  }

  /** peer id → Link, for every link made or being made. */
  get links() {
    return this.#links.map;
  }

  /** Start linking with the room's peers over `conn` (a RoomConnection from signaling.js). */
  attach(conn) {
    this.#conn = conn;
    conn.addEventListener("peer_joined", (e) => this.#learn(e.detail.peers));
    conn.addEventListener("peer_updated", (e) => this.#learn(e.detail.peers));
    conn.addEventListener("reconnect", (e) => this.#learn(e.detail.peers));
    this.#serving.server = { send: (message) => conn.sendJob(...toServer(message, this.#local.backend())) };
    conn.addEventListener("job_run", (e) => this.#serving.runApi(e.detail));
    conn.addEventListener("job_cancel", (e) => this.#serving.cancelApi(e.detail));
    // The server has given these jobs to another peer by now; nobody is left to stream to.
    conn.addEventListener("disconnect", () => this.#serving.dropLink(this.#serving.server));
    this.#learn(conn.peers);
    this.#links.attach(conn);
  }

  /** Close every link (the other ends notice at once) and stop. */
  close() {
    this.#links.close();
  }

  /** Drop `link`; whatever ran over it fails over (ours) or stops (theirs). */
  lose(link, why) {
    this.#links.lose(link, why);
  }

  /** This page's status changed: tell the server (presence) and every linked peer (hello). */
  publish(status) {
    this.#status = status;
    this.#conn?.updateStatus(status);
    for (const link of this.links.values()) if (link.state === "open") link.send(this.#hello());
  }

  /** This page's status as it last published it ({state, pause_reason, ...}). */
  get status() {
    return this.#status;
  }

  /** Whether this page's inference worker is generating, for whoever. */
  get computing() {
    return this.#lane.computing;
  }

  /** Jobs of other peers that wait in this page's lane or hold a reservation on it. */
  get queue() {
    return this.#serving.queue;
  }

  /** What this page tells the room about its part of the mesh (docs/realtime.md, "The mesh seen
   * from the room"): its open links with their round trips, and the jobs it runs for others. */
  get report() {
    const links = [...this.links.values()]
      .filter((link) => link.state === "open" && link.rtt !== null)
      .map((link) => ({ peer_id: link.peerId, rtt_ms: Math.round(link.rtt * 10) / 10 }));
    return { links, serving: this.#serving.running };
  }

  usernameOf(peerId) {
    return this.#usernames.get(peerId) ?? "a peer";
  }

  /** "alice's browser", or "alice's worker" for a headless one. */
  nameOf(peerId) {
    return `${this.usernameOf(peerId)}'s ${this.#workers.has(peerId) ? "worker" : "browser"}`;
  }

  /**
   * Run `job` = {id, model, prompt, params} here, on the mesh or wherever is best (mode
   * local|mesh|auto). onToken(text, tokens) gets the whole answer so far and about how many
   * tokens it holds after each token message;
   * onAttempt({worker, name, resume_text}) is called as each attempt starts (worker null =
   * this page). Returns {done, cancel()}: done resolves with {text, tokens, reason, attempts:
   * [{worker, username, outcome}], fallback} or rejects with the error that ended the job.
   */
  run(job, options) {
    return this.#requester.run(job, options);
  }

  /** A round trip to `peerId` over its data channel, in ms; rejects if no pong comes in time. */
  ping(peerId) {
    return this.#links.ping(peerId);
  }

  // ---- links ------------------------------------------------------------------------------

  #learn(peers) {
    for (const peer of peers) {
      const known = this.#usernames.has(peer.peer_id);
      this.#usernames.set(peer.peer_id, peer.username);
      if (WORKER_BACKENDS.has(peer.backend)) this.#workers.add(peer.peer_id);
      else if (peer.backend) this.#workers.delete(peer.peer_id);
      // A peer that linked to us before its peer_joined arrived gets its name now.
      const link = this.links.get(peer.peer_id);
      if (link && !known) this.#emitLink(link);
    }
  }

  #emitLink(link) {
    const detail = { peer_id: link.peerId, username: this.usernameOf(link.peerId), state: link.state, rtt_ms: link.rtt };
    this.dispatchEvent(new CustomEvent("link", { detail }));
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
