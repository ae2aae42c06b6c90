// Socket.IO signaling for one room: join (and join again, see "Staying connected" in
// docs/realtime.md), presence, WebRTC signal relay, TURN credentials kept fresh, and the peers
// panel's htmx trigger. The server contract is in docs/realtime.md.
//
//   const conn = await connectRoom("global", { capabilities: { backend: "wasm" }, onConnection: show });
//   conn.addEventListener("signal", (e) => handle(e.detail));   // {from, kind, data}
//   conn.signal(peerId, "offer", pc.localDescription);
//   conn.updateStatus({ state: "busy", tok_s: 120 });
//
// Events (CustomEvent, detail = the server payload): peer_joined {room, peers}, peer_left
// {room, peer_ids}, peer_updated {room, peers}, signal {from, kind, data}, error {code, message},
// disconnect {reason}, reconnect {peer_id, peers} (a new peer id: the server saw a new peer),
// ice_servers {ice_servers} (new TURN credentials, also in conn.iceServers), connection {state,
// attempt, reason, retry_in_ms} (see `state` below), job_run {payload, ack} and job_cancel
// {job_id}: the server's API jobs for this peer (serving.js checks and serves them; ack(answer)
// answers the server's callback). conn.sendJob(event, payload) streams back.

import { IceRefresh } from "/static/js/ice-refresh.js";

const STATUS_DEBOUNCE_MS = 250;
// The status fields whose change the room hears at once (the server's rule too, presence.matters).
const STATUS_AT_ONCE = ["state", "pause_reason", "serving", "backend", "models_warm"];
// The panel reloads at most once a second, and more rarely in big rooms, where every reload is
// one request per peer to the server.
const PANEL_MIN_INTERVAL_MS = 1000;
const PANEL_MS_PER_PEER = 10;
const PANEL_GATHER_MS = 100;
const EARLY_SIGNALS_MAX = 200;
const ACK_TIMEOUT_MS = 10_000;
// Tries to connect and join: the first after FIRST_RETRY_MS, each later one up to twice as late,
// at most MAX_RETRY_MS; the jitter spreads a room's peers out after a server restart.
const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 10_000;
// A try that has neither joined nor failed by then (a server that accepted the websocket and then
// said nothing) counts as failed.
const TRY_TIMEOUT_MS = 25_000;
// Join refusals that the next try would meet again: the room is gone, or closed to this user.
const FINAL_JOIN_ERRORS = new Set(["forbidden", "not_found"]);

/** Milliseconds to wait after the `failures`-th failure in a row: exponential, capped, the second
 * half of it random. */
function retryDelay(failures) {
  const cap = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** (failures - 1));
  return cap / 2 + (Math.random() * cap) / 2;
}

function socketIoUrl() {
  const meta = document.querySelector('meta[name="vendor-socket-io"]');
  if (!meta) throw new Error('the page lacks <meta name="vendor-socket-io">');
  return meta.content;
}

function plain(data) {
  // RTCSessionDescription and RTCIceCandidate serialise through toJSON().
  return data && typeof data.toJSON === "function" ? data.toJSON() : data;
}

export class RoomConnection extends EventTarget {
  peerId = null;
  iceServers = [];
  peers = [];
  // connecting: the first try (attempt 1) or a later one after failures; joined; reconnecting: the
  // connection was lost and attempt N is under way or scheduled; refused: the server said no
  // (signed out, room gone or closed to this user), nothing more is tried; left: leave() was called.
  state = "connecting";
  attempt = 1; // the try under way or scheduled since the last join (or since the start)

  #socket;
  #slug;
  #capabilities;
  #status = null;
  #statusTimer = null;
  #panelTimer = null;
  #panelAt = 0;
  #joins = 0;
  #opened = null; // {resolve, reject} of open(), until the first join
  #retryTimer = null;
  #tryTimer = null;
  #ice;
  #failures = 0; // tries that failed since the last join (or the start)
  // Signals that came before anyone listened: the server makes a peer reachable a moment before
  // its join ack arrives, so a newcomer's offer can beat our own mesh to its listener.
  #early = [];

  constructor(io, slug, capabilities) {
    super();
    this.#slug = slug;
    this.#capabilities = { ...capabilities };
    this.#socket = io({
      transports: ["websocket"],
      withCredentials: true,
      autoConnect: false,
      // This class does the retrying (#retry). socket.io-client 4.8's Manager retries a lost or
      // failed transport, but a CONNECT_ERROR or a server-sent disconnect destroys the socket and
      // ends its loop, and it cannot see a join that failed; one loop here covers all of them.
      reconnection: false,
    });
    const socket = this.#socket;
    this.#ice = new IceRefresh(
      () => socket.timeout(ACK_TIMEOUT_MS).emitWithAck("refresh_ice", {}),
      (iceServers) => {
        this.iceServers = iceServers;
        this.#emit("ice_servers", { ice_servers: iceServers });
      },
    );
    socket.on("peer_joined", (payload) => {
      const known = new Set(this.peers.map((p) => p.peer_id));
      for (const peer of payload.peers) if (!known.has(peer.peer_id) && peer.peer_id !== this.peerId) this.peers.push(peer);
      this.#emit("peer_joined", payload);
      this.#peersChanged();
    });
    socket.on("peer_left", (payload) => {
      const gone = new Set(payload.peer_ids);
      this.peers = this.peers.filter((p) => !gone.has(p.peer_id));
      this.#emit("peer_left", payload);
      this.#peersChanged();
    });
    socket.on("peer_updated", (payload) => {
      const byId = new Map(payload.peers.map((p) => [p.peer_id, p]));
      this.peers = this.peers.map((p) => byId.get(p.peer_id) ?? p);
      this.#emit("peer_updated", payload);
      this.#peersChanged();
    });
    socket.on("signal", (payload) => {
      if (!this.#early) this.#emit("signal", payload);
      else if (this.#early.length < EARLY_SIGNALS_MAX) this.#early.push(payload);
    });
    socket.on("error", (payload) => this.#emit("error", payload));
    socket.on("job_run", (payload, ack) => this.#emit("job_run", { payload, ack: typeof ack === "function" ? ack : () => {} }));
    socket.on("job_cancel", (payload) => this.#emit("job_cancel", payload));
    socket.on("connect", () => this.#joinNow());
    socket.on("disconnect", (reason) => {
      this.#emit("disconnect", { reason });
      this.#peersChanged();
      // Ours (leave(), or a try we gave up on) is not retried. "io server disconnect" is: the
      // server ends a revoked credential's sockets that way, and then refuses the next try, which
      // stops for good; anything else it might mean deserves a try.
      if (reason !== "io client disconnect") this.#retry(reason);
    });
    socket.on("connect_error", (err) => {
      // The server's refusal (a CONNECT_ERROR packet) leaves the socket inactive; a transport that
      // failed (server down, network gone, handshake timed out) does not.
      if (socket.active) this.#retry(err.message);
      else this.#refuse(err.message);
    });
  }

  /** Whether this peer is in its room now (signals and status reach the server). */
  get joined() {
    return this.state === "joined";
  }

  /** The first "signal" listener also gets, in order and just after, the signals that came before it. */
  addEventListener(type, listener, options) {
    super.addEventListener(type, listener, options);
    if (type !== "signal" || !this.#early) return;
    const early = this.#early;
    this.#early = null;
    queueMicrotask(() => early.forEach((payload) => this.#emit("signal", payload)));
  }

  /** Connect and join; resolves once the server acked the first join, however many tries that
   * takes; rejects (error.refused = true) if the server refuses this user or room. */
  open() {
    return new Promise((resolve, reject) => {
      this.#opened = { resolve, reject };
      this.#setState("connecting");
      this.#try();
    });
  }

  #try() {
    clearTimeout(this.#tryTimer);
    this.#tryTimer = setTimeout(() => this.#retry("no answer from the server"), TRY_TIMEOUT_MS);
    this.#socket.connect();
  }

  /** This try failed, or the connection was lost: start over from a closed socket after a delay. */
  #retry(reason) {
    if (this.state === "refused" || this.state === "left" || this.#retryTimer) return;
    clearTimeout(this.#tryTimer);
    this.#ice.stop();
    this.#socket.disconnect();
    // Losing a joined connection is the first failure; reconnect attempt 1 comes after it.
    this.#failures = this.state === "joined" ? 1 : this.#failures + 1;
    this.attempt = this.#joins ? this.#failures : this.#failures + 1;
    const delay = retryDelay(this.#failures);
    this.#setState(this.#joins ? "reconnecting" : "connecting", { reason, retry_in_ms: Math.round(delay) });
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      this.#try();
    }, delay);
  }

  #refuse(reason) {
    if (this.state === "left") return;
    for (const timer of [this.#retryTimer, this.#tryTimer]) clearTimeout(timer);
    this.#ice.stop();
    this.#socket.disconnect();
    this.#setState("refused", { reason });
    this.#opened?.reject(Object.assign(new Error(reason), { refused: true }));
  }

  async #joinNow() {
    let ack;
    try {
      ack = await this.#join();
    } catch (err) {
      if (FINAL_JOIN_ERRORS.has(err.code)) this.#refuse(err.message);
      else this.#retry(err.message);
      return;
    }
    clearTimeout(this.#tryTimer);
    this.#failures = 0;
    this.#setState("joined");
    this.attempt = 1;
    this.#ice.start(ack.ice_ttl_s);
    if (this.#joins++ === 0) {
      this.#opened.resolve(this);
      this.#opened = null;
    } else {
      this.#emit("reconnect", { peer_id: ack.peer_id, peers: ack.peers });
    }
    this.#peersChanged();
  }

  async #join() {
    const capabilities = { ...this.#capabilities };
    if (this.#status) {
      const { state, backend, models_warm } = this.#status;
      Object.assign(capabilities, { state, backend, models_warm });
    }
    const ack = await this.#socket.timeout(ACK_TIMEOUT_MS).emitWithAck("join_room", { room: this.#slug, capabilities });
    if (ack.error) throw Object.assign(new Error(ack.error.message), { code: ack.error.code });
    this.peerId = ack.peer_id;
    this.peers = ack.peers;
    this.iceServers = ack.ice_servers;
    if (this.#status) this.#socket.emit("status", this.#status);
    return ack;
  }

  /** Tell the room this peer's state; fields left out keep their last value. A change the room
   * must see at once (what the peer does, whom it serves: docs/realtime.md) goes now, ahead of
   * anything this page sends after it; speed, queue and link round trips are debounced. */
  updateStatus(status) {
    const last = this.#status;
    this.#status = { state: "idle", backend: "", models_warm: [], queue: 0, tok_s: 0, ...this.#status, ...status };
    const urgent = !last || STATUS_AT_ONCE.some((key) => JSON.stringify(last[key]) !== JSON.stringify(this.#status[key]));
    if (urgent) {
      clearTimeout(this.#statusTimer);
      this.#statusTimer = null;
      if (this.joined) this.#socket.emit("status", this.#status);
      return;
    }
    if (this.#statusTimer) return;
    this.#statusTimer = setTimeout(() => {
      this.#statusTimer = null;
      if (this.joined) this.#socket.emit("status", this.#status);
    }, STATUS_DEBOUNCE_MS);
  }

  /** Send `data` (an SDP or ICE candidate) to peer `to` in this room; kind: offer|answer|candidate.
   * Dropped while not joined: Socket.IO would send it after a reconnect, from a new peer id. */
  signal(to, kind, data) {
    if (this.joined) this.#socket.emit("signal", { to, kind, data: plain(data) });
  }

  /** Send an API job's token batch, done or error to the server; false (and dropped) while
   * disconnected: Socket.IO would otherwise deliver it after a reconnect, under a new peer id,
   * for a job the server has given to someone else. */
  sendJob(event, payload) {
    if (!this.joined) return false;
    this.#socket.emit(event, payload);
    return true;
  }

  leave() {
    for (const timer of [this.#statusTimer, this.#panelTimer, this.#retryTimer, this.#tryTimer]) clearTimeout(timer);
    this.#ice.stop();
    if (this.#socket.connected) this.#socket.emit("leave_room", {});
    this.#setState("left");
    this.#socket.disconnect();
    this.peerId = null;
    this.peers = [];
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #setState(state, extra = {}) {
    this.state = state;
    this.#emit("connection", { state, attempt: this.attempt, reason: "", retry_in_ms: 0, ...extra });
  }

  // Presence changed: let htmx reload the peers fragment from the server, throttled (trailing).
  #peersChanged() {
    if (this.#panelTimer) return;
    const interval = Math.max(PANEL_MIN_INTERVAL_MS, this.peers.length * PANEL_MS_PER_PEER);
    const wait = Math.max(PANEL_GATHER_MS, this.#panelAt + interval - Date.now());
    this.#panelTimer = setTimeout(() => {
      this.#panelTimer = null;
      this.#panelAt = Date.now();
      if (window.htmx) window.htmx.trigger(document.body, "peers-changed");
      else document.body.dispatchEvent(new CustomEvent("peers-changed", { bubbles: true }));
    }, wait);
  }
}

/** Connect to the signaling server (same origin, session cookie) and join room `slug`, trying
 * again until it works or the server refuses; onConnection(detail) hears every "connection" event,
 * the tries before the first join included. */
export async function connectRoom(slug, { capabilities = {}, onConnection = null } = {}) {
  const { io } = await import(socketIoUrl());
  const conn = new RoomConnection(io, slug, capabilities);
  if (onConnection) conn.addEventListener("connection", (e) => onConnection(e.detail));
  return conn.open();
}
