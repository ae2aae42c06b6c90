// Socket.IO signaling for one room: join, presence, WebRTC signal relay, and the peers panel's
// htmx trigger. The server contract is in docs/realtime.md.
//
//   const conn = await connectRoom("global", { capabilities: { backend: "wasm" } });
//   conn.addEventListener("signal", (e) => handle(e.detail));   // {from, kind, data}
//   conn.signal(peerId, "offer", pc.localDescription);
//   conn.updateStatus({ state: "busy", tok_s: 120 });
//
// Events (CustomEvent, detail = the server payload): peer_joined {room, peers}, peer_left
// {room, peer_ids}, peer_updated {room, peers}, signal {from, kind, data}, error {code, message},
// disconnect {reason}, reconnect {peer_id, peers} (a new peer id: the server saw a new peer),
// job_run {payload, ack} and job_cancel {job_id}: the server's API jobs for this peer (serving.js checks
// and serves them; ack(answer) answers the server's callback). conn.sendJob(event, payload) streams back.

const STATUS_DEBOUNCE_MS = 250;
// The panel reloads at most once a second, and more rarely in big rooms, where every reload is
// one request per peer to the server.
const PANEL_MIN_INTERVAL_MS = 1000;
const PANEL_MS_PER_PEER = 10;
const PANEL_GATHER_MS = 100;
const EARLY_SIGNALS_MAX = 200;

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

  #socket;
  #slug;
  #capabilities;
  #status = null;
  #statusTimer = null;
  #panelTimer = null;
  #panelAt = 0;
  #joins = 0;
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
      reconnectionDelayMax: 10000,
    });
    const socket = this.#socket;
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
    socket.on("disconnect", (reason) => {
      this.#emit("disconnect", { reason });
      this.#peersChanged();
    });
    socket.on("connect_error", (err) => {
      // After the first join: the client retries by itself unless the server refused us.
      if (this.#joins > 0) this.#emit("error", { code: "connect_error", message: err.message });
    });
  }

  /** The first "signal" listener also gets, in order and just after, the signals that came before it. */
  addEventListener(type, listener, options) {
    super.addEventListener(type, listener, options);
    if (type !== "signal" || !this.#early) return;
    const early = this.#early;
    this.#early = null;
    queueMicrotask(() => early.forEach((payload) => this.#emit("signal", payload)));
  }

  /** Connect and join; resolves once the server acked the first join. */
  open() {
    return new Promise((resolve, reject) => {
      const socket = this.#socket;
      socket.on("connect", async () => {
        try {
          const ack = await this.#join();
          if (this.#joins++ === 0) resolve(this);
          else this.#emit("reconnect", { peer_id: ack.peer_id, peers: ack.peers });
          this.#peersChanged();
        } catch (err) {
          if (this.#joins === 0) {
            socket.disconnect();
            reject(err);
          } else {
            this.#emit("error", { code: err.code ?? "join_failed", message: err.message });
          }
        }
      });
      socket.once("connect_error", (err) => {
        // Refused (not signed in) or unreachable on the first try: say so now rather than retry
        // behind the caller's back; the page works without the mesh.
        if (this.#joins === 0) {
          socket.disconnect();
          reject(new Error(err.message));
        }
      });
    });
  }

  async #join() {
    const capabilities = { ...this.#capabilities };
    if (this.#status) {
      const { state, backend, models_warm } = this.#status;
      Object.assign(capabilities, { state, backend, models_warm });
    }
    const ack = await this.#socket.timeout(10000).emitWithAck("join_room", { room: this.#slug, capabilities });
    if (ack.error) throw Object.assign(new Error(ack.error.message), { code: ack.error.code });
    this.peerId = ack.peer_id;
    this.peers = ack.peers;
    this.iceServers = ack.ice_servers;
    if (this.#status) this.#socket.emit("status", this.#status);
    return ack;
  }

  /** Tell the room this peer's state; fields left out keep their last value. Debounced. */
  updateStatus(status) {
    this.#status = { state: "idle", backend: "", models_warm: [], queue: 0, tok_s: 0, ...this.#status, ...status };
    if (this.#statusTimer) return;
    this.#statusTimer = setTimeout(() => {
      this.#statusTimer = null;
      if (this.#socket.connected && this.peerId) this.#socket.emit("status", this.#status);
    }, STATUS_DEBOUNCE_MS);
  }

  /** Send `data` (an SDP or ICE candidate) to peer `to` in this room; kind: offer|answer|candidate. */
  signal(to, kind, data) {
    this.#socket.emit("signal", { to, kind, data: plain(data) });
  }

  /** Send an API job's token batch, done or error to the server; false (and dropped) while
   * disconnected: Socket.IO would otherwise deliver it after a reconnect, under a new peer id,
   * for a job the server has given to someone else. */
  sendJob(event, payload) {
    if (!this.#socket.connected) return false;
    this.#socket.emit(event, payload);
    return true;
  }

  leave() {
    clearTimeout(this.#statusTimer);
    clearTimeout(this.#panelTimer);
    if (this.#socket.connected) this.#socket.emit("leave_room", {});
    this.#socket.disconnect();
    this.peerId = null;
    this.peers = [];
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
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

/** Connect to the signaling server (same origin, session cookie) and join room `slug`. */
export async function connectRoom(slug, { capabilities = {} } = {}) {
  const { io } = await import(socketIoUrl());
  return new RoomConnection(io, slug, capabilities).open();
}
