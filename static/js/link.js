/* One link to another peer: its RTCPeerConnection and the offer/answer/candidates that set it up,
 * the negotiated data channel, the hello it sent, its heartbeat and round trip, and a rate limit on
 * what it may send us. links.js makes and drops links; the messages' shapes are in protocol.js. */

import { MAX_MESSAGE_CHARS, PROTOCOL_VERSION } from "/static/js/protocol.js";

const CONNECT_TIMEOUT_MS = 10_000;
const MESSAGES_PER_S = 2000; // per link; a token stream from a fast model stays far below it
// Three missed heartbeats: fast enough to fail over "within a few seconds", slow enough that a
// busy tab (timers clamped to 1 s in the background) is not taken for a lost one.
const SILENCE_MS = 3500;
// An offer or answer waits for the first burst of ICE candidates (host ones: a few ms) so that it
// carries them instead of a signal for each: until gathering is complete, or no candidate came for
// GATHER_QUIET_MS, at most GATHER_WAIT_MS. Later ones (STUN, TURN, TCP) trickle.
const GATHER_QUIET_MS = 20;
const GATHER_WAIT_MS = 300;

export class Link {
  /** `onUnreachable(link)` runs if the channel has not opened within CONNECT_TIMEOUT_MS;
   * `certificates`: the page's DTLS certificate, made once for all its links (none: one each). */
  constructor(peerId, initiator, iceServers, certificates, onUnreachable) {
    this.peerId = peerId;
    this.initiator = initiator;
    this.state = "connecting";
    this.hello = null; // readCapabilities() of its last hello
    this.rtt = null; // smoothed round trip, ms
    this.heardAt = performance.now();
    this.pings = new Map(); // n → {at, resolve?, reject?} of pings awaiting their pong
    this.candidates = []; // remote ICE candidates that came before the remote description
    this.described = false; // our description went out: candidates gathered from now on trickle
    this.budget = MESSAGES_PER_S;
    this.budgetAt = performance.now();
    this.problems = 0;
    this.pc = new RTCPeerConnection({ iceServers, certificates });
    // Negotiated: both ends create the same channel at once, no announcement round trip.
    this.channel = this.pc.createDataChannel("mesh", { negotiated: true, id: 0, ordered: true });
    this.timeout = setTimeout(() => onUnreachable(this), CONNECT_TIMEOUT_MS);
  }

  /** Our offer, to signal to the peer (we are the initiator). */
  async offer() {
    await this.pc.setLocalDescription();
    return this.#described();
  }

  /** The peer's offer: our answer, to signal back. */
  async answer(offer) {
    await this.pc.setRemoteDescription(offer);
    await this.#addCandidates();
    await this.pc.setLocalDescription();
    return this.#described();
  }

  /** Our description after the first burst of candidates, with them in its SDP; those found
   * later go out one by one (links.js). */
  async #described() {
    if (this.pc.iceGatheringState !== "complete") {
      await new Promise((resolve) => {
        let quiet = null;
        const done = () => {
          clearTimeout(cap);
          clearTimeout(quiet);
          this.pc.removeEventListener("icecandidate", onCandidate);
          resolve();
        };
        const cap = setTimeout(done, GATHER_WAIT_MS);
        const onCandidate = ({ candidate }) => {
          clearTimeout(quiet);
          if (candidate) quiet = setTimeout(done, GATHER_QUIET_MS);
          else done(); // gathering is complete
        };
        this.pc.addEventListener("icecandidate", onCandidate);
      });
    }
    this.described = true;
    return this.pc.localDescription;
  }

  /** The peer's answer to our offer; ignored unless we are waiting for one. */
  async answered(answer) {
    if (this.pc.signalingState !== "have-local-offer") return;
    await this.pc.setRemoteDescription(answer);
    await this.#addCandidates();
  }

  /** A candidate of the peer's; kept until its description has come. */
  async candidate(candidate) {
    this.candidates.push(candidate);
    if (this.pc.remoteDescription) await this.#addCandidates();
  }

  async #addCandidates() {
    for (const candidate of this.candidates.splice(0)) {
      await this.pc.addIceCandidate(candidate).catch((error) => console.warn(`mesh: a candidate from ${this.peerId}: ${error.message}`));
    }
  }

  /** New STUN/TURN servers (fresh TURN credentials): an ICE restart on this connection uses them. */
  useIceServers(iceServers) {
    try {
      this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers });
    } catch (error) {
      console.warn(`mesh: the link to ${this.peerId} keeps its ICE servers: ${error.message}`);
    }
  }

  /** One heartbeat: false if the peer has been silent too long; else forget pings too old for a
   * pong (rejecting who waits on them) and send ping `n`. */
  beat(now, n) {
    if (now - this.heardAt > SILENCE_MS) return false;
    for (const [old, ping] of this.pings) {
      if (now - ping.at < SILENCE_MS) continue;
      this.pings.delete(old);
      ping.reject?.(new Error(`no pong from ${this.peerId}`));
    }
    this.pings.set(n, { at: now });
    this.send({ type: "ping", n });
    return true;
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

  /** A pong for ping `n` came: fold its round trip in. False if no such ping is waiting. */
  ponged(n) {
    const ping = this.pings.get(n);
    if (!ping) return false;
    this.pings.delete(n);
    const rtt = performance.now() - ping.at;
    this.rtt = this.rtt === null ? rtt : this.rtt * 0.8 + rtt * 0.2;
    ping.resolve?.(rtt);
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
