/* TURN credentials kept fresh: those a join hands out expire after `ice_ttl_s` (TURN_TTL), a tab
 * outlives them, and the links it makes later need valid ones. signaling.js starts it at each join
 * and stops it when the connection goes (the next join brings new ones); docs/realtime.md. */

// New credentials at 80 % of their lifetime; if the server does not answer, again every 5 %.
const REFRESH_AT = 0.8;
const RETRY_AT = 0.05;

export class IceRefresh {
  #ask;
  #onFresh;
  #timer = null;
  #round = 0; // bumped by stop(): an answer to an older round is not used

  /** ask() → Promise of the server's `{ice_servers, ice_ttl_s}` (rejects when none comes);
   * onFresh(iceServers) hears each new list. */
  constructor(ask, onFresh) {
    this.#ask = ask;
    this.#onFresh = onFresh;
  }

  /** Credentials good for `ttlS` seconds just came: ask for new ones in time (none: nothing expires). */
  start(ttlS, fraction = REFRESH_AT) {
    this.stop();
    if (ttlS) this.#timer = setTimeout(() => this.#refresh(ttlS), Math.max(1000, ttlS * 1000 * fraction));
  }

  stop() {
    clearTimeout(this.#timer);
    this.#round += 1;
  }

  async #refresh(ttlS) {
    const round = this.#round;
    try {
      const ack = await this.#ask();
      if (ack.error) throw new Error(ack.error.message);
      if (round !== this.#round) return;
      this.#onFresh(ack.ice_servers);
      this.start(ack.ice_ttl_s);
    } catch (error) {
      if (round !== this.#round) return;
      console.warn(`signaling: no new ICE credentials yet (${error.message}); asking again soon`);
      this.start(ttlS, RETRY_AT);
    }
  }
}
