/* This tab as a peer, for as long as the document lives: its inference worker (and warm model),
 * its Peer status, and its membership of one room's mesh (socket and data channels), with the run
 * of its own that is in progress. Links inside the app swap the page's content without a reload
 * (hx-boost in base.html), so all of this outlives the room page's DOM: room.js and dock.js are
 * views that attach to it. One instance per document, `session`.
 *
 * Events (CustomEvent): status {status} after every change of the Peer's status; progress
 * {loaded, total}; loaded {entry, ready}; load-failed {entry, error}; work (mesh.js's, re-sent);
 * link; connection {state, attempt, reason}: signaling's retries; run {run}: a run of this page
 * started; membership: joined, left, or switching rooms;
 * problem {text}: something the room page should say. */

import { InferenceClient, takeEarly } from "/static/js/inference.js";
import { Mesh } from "/static/js/mesh.js";
import { PageRun } from "/static/js/page-run.js";
import { watchPause } from "/static/js/pause.js";
import { Peer } from "/static/js/peer.js";
import { connectRoom } from "/static/js/signaling.js";

// How often at most the room hears new round trips of the same links.
const LINKS_REPORT_MS = 5000;

class PeerSession extends EventTarget {
  #linksAt = 0;
  slug = null; // the room whose mesh this tab is in (or joining)
  roomName = "";
  pending = null; // {slug, name}: the room to join once this page's own run is over
  client = null;
  peer = null;
  pause = null; // pause.js's watcher: sharing choice, hidden tab, battery, device loss
  mesh = null;
  conn = null;
  run = null; // this page's last run (running or not)
  conversation = null; // the room page's conversation (conversation.js), kept while the page is swapped out
  work = null; // the last thing done for another peer (mesh.js "work" detail)
  connection = null; // signaling.js's last "connection" detail: joined, retrying, refused
  problem = null; // what went wrong joining or starting inference, for the room page to say
  lastLoad = null; // {entry, ready} of the last model load
  models = []; // the catalogue's entries, read from the first room page

  constructor() {
    super();
    // The document is going: leave the room at once, so the others stop sending and fail over.
    addEventListener("pagehide", () => this.#disconnect());
  }

  get csrf() {
    return document.querySelector('meta[name="csrf-token"]').content;
  }

  /** Be a peer of the room whose page element is `roomEl`; a tab is in one room's mesh at a time. */
  enter(roomEl, { config, models }) {
    const { room: slug, roomName: name } = roomEl.dataset;
    if (!this.client) this.#start(config, models);
    if (slug === this.slug) {
      // Back in this room before the run that held the tab here ended: stay.
      if (this.pending) {
        this.pending = null;
        this.#emit("membership");
      }
      return;
    }
    if (this.run?.running) {
      // Switching rooms: this page's own run finishes in the room it started in (its worker may be a
      // peer there); the tab joins the new room right after. Jobs it serves for others stop now.
      this.pending = { slug, name };
      this.#emit("membership");
      return;
    }
    this.leave();
    this.#join(slug, name);
  }

  /** Leave the room's mesh: links closed, socket gone. The inference worker and its model stay. */
  leave({ cancelRun = false } = {}) {
    if (cancelRun) this.run?.cancel();
    this.pending = null;
    if (!this.slug) return;
    this.#disconnect();
    this.slug = null;
    this.roomName = "";
    this.#emit("membership");
  }

  /** Run a prompt from the room page; see PageRun. */
  startRun(fields) {
    const run = new PageRun(this, fields);
    this.run = run;
    run.addEventListener("end", () => {
      this.peer.update({ state: this.peer.state });
      if (this.pending) {
        const { slug, name } = this.pending;
        this.leave();
        this.#join(slug, name);
      }
    });
    this.#emit("run", { run });
    run.start();
    return run;
  }

  catalogueEntry(id) {
    return this.models.find((m) => m.id === id) ?? null;
  }

  #start(config, models) {
    this.models = models;
    const catalogue = { ids: () => this.models.map((m) => m.id), entry: (id) => this.catalogueEntry(id) };
    const hooks = {
      onProgress: (detail) => this.#emit("progress", detail),
      onBackend: (backend) => this.peer.update({ backend: backend.device }),
      onDeviceLost: () => this.pause.deviceLost(),
    };
    // The worker the page's head started (inference-start.js), if it did: it may have its backend already.
    this.client = takeEarly(hooks) ?? new InferenceClient(config, hooks);
    this.peer = new Peer(this.client, catalogue, {
      onStatus: (status) => this.#emit("status", { status }),
      onLoaded: (entry, ready) => {
        this.lastLoad = { entry, ready };
        this.#emit("loaded", { entry, ready });
      },
      onLoadFailed: (entry, error) => this.#emit("load-failed", { entry, error }),
    });
    // Before any join: a page that does not share joins paused, never briefly available.
    this.pause = watchPause((reason, sharing) => this.peer.pause(reason, sharing));
    this.ready = (this.client.started ?? this.client.start()).then(
      (backend) => this.peer.update({ backend: backend.device, state: this.peer.state }),
      (error) => {
        this.peer.update({ state: this.peer.state });
        this.#say(`This browser cannot run models here: ${error.message}`, { fatal: true });
        throw error;
      },
    );
    this.ready.catch(() => {});
  }

  /** Join room `slug`'s signaling and mesh; without them, prompts still run in this browser. */
  async #join(slug, name) {
    this.slug = slug;
    this.roomName = name;
    this.problem = null;
    this.connection = null; // the last room's is not this one's
    const mesh = new Mesh(this.peer.localRunner());
    this.mesh = mesh;
    this.peer.mesh = mesh;
    mesh.addEventListener("work", (event) => {
      this.work = event.detail;
      // A job that starts here makes this peer busy and its requester served, in one status that
      // goes out before its first token does.
      const { serving } = mesh.report;
      if (this.peer.status.queue !== mesh.queue || JSON.stringify(serving) !== JSON.stringify(this.peer.status.serving)) {
        this.peer.update({ queue: mesh.queue, serving, state: this.peer.state });
      }
      this.#emit("work", event.detail);
    });
    mesh.addEventListener("lane", () => this.peer.update({ state: this.peer.state }));
    mesh.addEventListener("link", () => {
      this.#reportLinks(mesh);
      this.#emit("link");
    });
    this.#emit("membership");
    const status = this.peer.status;
    const capabilities = {
      backend: status.backend, user_agent: navigator.userAgent.slice(0, 300), state: status.state, pause_reason: status.pause_reason,
    };
    try {
      const onConnection = (detail) => {
        if (this.mesh !== mesh) return;
        this.connection = detail;
        this.#emit("connection", detail);
      };
      const conn = await connectRoom(slug, { capabilities, onConnection });
      if (this.mesh !== mesh) return conn.leave(); // left (or moved on) while joining
      this.conn = conn;
      mesh.attach(conn);
      this.peer.update({});
      this.#emit("membership");
    } catch (error) {
      // A refusal is on the connection line already; this is for a client that failed to load.
      if (this.mesh === mesh && !error.refused) this.#say(`This page could not join the room's mesh (${error.message}); prompts run in this browser only.`);
    }
  }

  /** Tell the room this page's links: a link made or lost at once; round trips every few seconds
   * at most, and only when one moved noticeably (each pong moves them a little, and every report
   * makes each page of the room reload its peers panel). */
  #reportLinks(mesh) {
    const { links } = mesh.report;
    const last = this.peer.status.links;
    const ids = (list) => list.map((link) => link.peer_id).join();
    const now = performance.now();
    if (ids(links) === ids(last)) {
      if (now - this.#linksAt < LINKS_REPORT_MS) return;
      const moved = links.some((link, i) => Math.abs(link.rtt_ms - last[i].rtt_ms) > Math.max(1, last[i].rtt_ms / 4));
      if (!moved) return;
    }
    this.#linksAt = now;
    this.peer.update({ links });
  }

  #disconnect() {
    this.mesh?.close();
    this.conn?.leave();
    this.mesh = null;
    this.conn = null;
    if (this.peer) this.peer.mesh = null;
  }

  #say(text, { fatal = false } = {}) {
    this.problem = { text, fatal };
    this.#emit("problem", this.problem);
  }

  #emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

export const session = new PeerSession();
