/* This page's data-channel links to the room's peers (one Link each, link.js): made over the
 * signaling connection (signaling.js), kept alive by heartbeats, dropped when lost, made again
 * after a glitch, and all made anew when the connection comes back under a new peer id. mesh.js
 * routes what arrives on them. Who offers, the cap and the timings: docs/mesh.md, "Links".
 *
 *   const links = new Links({ opened(link), message(link, data), lost(link), changed(link) });
 *   links.attach(conn);   // a RoomConnection that has joined
 */

import { Link } from "/static/js/link.js";

// Each RTCPeerConnection costs the browser ICE, DTLS and SCTP state and a few threads; past a
// dozen peers a job gains nothing from one more candidate, so a page links to at most this many.
const MAX_CONNECTIONS = 16;
const HEARTBEAT_MS = 1000;
const RETRY_LINK_MS = 3000;
// A newcomer offers at once; if its offer got lost anyway (signaling.js keeps the ones that reach a
// page before its mesh listens), the older peer offers after this long.
const ADOPT_AFTER_MS = 3000;

export class Links {
  peerId = null;
  iceServers = [];
  map = new Map(); // peer id → Link

  #hooks;
  #conn = null;
  #heartbeat = null;
  #closed = false;
  #pingN = 0;
  #certificates = [];
  #certified;

  /** hooks: opened(link) when its channel opens, message(link, data) for each message on it,
   * lost(link) once it is dropped, changed(link) when its state or round trip changed. */
  constructor(hooks) {
    this.#hooks = hooks;
    // One DTLS certificate for all of this page's links, made while the page joins: otherwise each
    // connection makes its own key pair, N−1 of them on every page of a room opened at once.
    this.#certified = RTCPeerConnection.generateCertificate({ name: "ECDSA", namedCurve: "P-256" }).then(
      (certificate) => (this.#certificates = [certificate]),
      (error) => console.warn(`mesh: each link makes its own certificate: ${error.message}`),
    );
  }

  async attach(conn) {
    this.#conn = conn;
    this.peerId = conn.peerId;
    this.iceServers = conn.iceServers;
    const peers = conn.peers; // the ack's: peers who join later offer to us
    conn.addEventListener("peer_joined", (e) => {
      for (const peer of e.detail.peers) this.#adoptLater(peer.peer_id);
    });
    conn.addEventListener("peer_left", (e) => {
      for (const peerId of e.detail.peer_ids) {
        const link = this.map.get(peerId);
        if (link) this.lose(link, "left the room");
      }
    });
    conn.addEventListener("reconnect", (e) => {
      // The server gave us a new peer id: the others know us under it only, so start over. Links
      // that lived through the outage (peer to peer, the server is not needed) go too: the other
      // end knows this page by its old id, and its peer may have been given a new one as well.
      for (const link of [...this.map.values()]) this.lose(link, "signaling reconnected");
      this.peerId = e.detail.peer_id;
      this.iceServers = conn.iceServers;
      this.#join(e.detail.peers);
    });
    conn.addEventListener("ice_servers", (e) => {
      // Links made from now on get the new TURN credentials; the others would need them for an
      // ICE restart.
      this.iceServers = e.detail.ice_servers;
      for (const link of this.map.values()) link.useIceServers(this.iceServers);
    });
    this.#heartbeat = setInterval(() => this.#beat(), HEARTBEAT_MS);
    await this.#certified;
    // Offers that came meanwhile wait in signaling.js for this first listener.
    conn.addEventListener("signal", (e) => this.#onSignal(e.detail).catch((error) => console.warn(`mesh: signal from ${e.detail.from} failed: ${error.message}`)));
    if (!this.#closed) this.#join(peers);
  }

  /** Close every link (the other ends notice at once) and stop. */
  close() {
    this.#closed = true;
    clearInterval(this.#heartbeat);
    for (const link of [...this.map.values()]) this.lose(link, "this page left");
  }

  /** A round trip to `peerId` over its data channel, in ms; rejects if no pong comes in time. */
  ping(peerId) {
    const link = this.map.get(peerId);
    if (!link || link.state !== "open") return Promise.reject(new Error(`no open link to ${peerId}`));
    const n = ++this.#pingN;
    return new Promise((resolve, reject) => {
      link.pings.set(n, { at: performance.now(), resolve, reject });
      link.send({ type: "ping", n });
    });
  }

  /** Drop `link`; whatever ran over it fails over (ours) or stops (theirs). */
  lose(link, why, { quiet = false } = {}) {
    if (this.map.get(link.peerId) !== link) return;
    this.map.delete(link.peerId);
    link.lostWhy = why.startsWith("silent") ? "silent" : "closed"; // a job's trace says which
    const wasOpen = link.state === "open";
    link.close();
    if (!quiet) console.info(`mesh: link to ${link.peerId} ${wasOpen ? "lost" : "not made"}: ${why}`);
    this.#hooks.lost(link);
    // A glitch, not a departure: if the peer is still in the room, one side links again.
    const stillHere = () => this.#conn?.peers.some((p) => p.peer_id === link.peerId);
    if (wasOpen && !quiet && !this.#closed && this.peerId < link.peerId) {
      setTimeout(() => {
        if (stillHere()) this.#connect(link.peerId).catch(() => {});
      }, RETRY_LINK_MS);
    }
  }

  #adoptLater(peerId) {
    setTimeout(() => {
      const present = this.#conn?.peers.some((p) => p.peer_id === peerId);
      if (present && !this.#closed && !this.map.has(peerId)) {
        this.#connect(peerId).catch((error) => console.warn(`mesh: offer to ${peerId} failed: ${error.message}`));
      }
    }, ADOPT_AFTER_MS);
  }

  /** We just joined: we open the links to the peers already there, oldest first, up to the cap. */
  #join(peers) {
    for (const peer of peers) this.#connect(peer.peer_id).catch((error) => console.warn(`mesh: offer to ${peer.peer_id} failed: ${error.message}`));
  }

  async #connect(peerId) {
    // While the connection is down no offer can go out; the next join links anew.
    if (this.map.has(peerId) || peerId === this.peerId || !this.#conn.joined) return;
    if (this.map.size >= MAX_CONNECTIONS) {
      console.info(`mesh: at the cap of ${MAX_CONNECTIONS} links; not linking to ${peerId}`);
      return;
    }
    const link = this.#open(peerId, true);
    const offer = await link.offer();
    if (this.map.get(peerId) === link) this.#conn.signal(peerId, "offer", offer);
  }

  #open(peerId, initiator) {
    const link = new Link(peerId, initiator, this.iceServers, this.#certificates, (l) => this.lose(l, "unreachable"));
    this.map.set(peerId, link);
    link.pc.onicecandidate = ({ candidate }) => {
      // Candidates found before our description went out are in its SDP. An active TCP candidate
      // only reaches a passive one, which browsers do not offer: it would double the signals and the
      // pairs ICE checks for nothing when a whole room links at once.
      if (candidate && link.described && candidate.tcpType !== "active") this.#conn.signal(peerId, "candidate", candidate);
    };
    link.pc.onconnectionstatechange = () => {
      if (["failed", "closed"].includes(link.pc.connectionState)) this.lose(link, `connection ${link.pc.connectionState}`);
    };
    link.channel.onopen = () => {
      clearTimeout(link.timeout);
      link.state = "open";
      link.heardAt = performance.now();
      this.#hooks.opened(link);
    };
    link.channel.onclose = () => this.lose(link, "channel closed");
    link.channel.onmessage = (event) => {
      if (this.map.get(link.peerId) !== link) return;
      link.heardAt = performance.now();
      this.#hooks.message(link, event.data);
    };
    this.#hooks.changed(link);
    return link;
  }

  async #onSignal({ from, kind, data }) {
    let link = this.map.get(from);
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
      if (this.map.size >= MAX_CONNECTIONS) {
        console.info(`mesh: at the cap of ${MAX_CONNECTIONS} links; ignoring an offer from ${from}`);
        return;
      }
      link = this.#open(from, false);
      const answer = await link.answer(data);
      if (this.map.get(from) === link) this.#conn.signal(from, "answer", answer);
    } else if (kind === "answer") {
      await link?.answered(data);
    } else if (kind === "candidate" && link && data?.candidate) {
      await link.candidate(data);
    }
  }

  #beat() {
    const now = performance.now();
    for (const link of [...this.map.values()]) {
      if (link.state === "open" && !link.beat(now, ++this.#pingN)) {
        this.lose(link, `silent for ${((now - link.heardAt) / 1000).toFixed(1)} s`);
      }
    }
  }
}
