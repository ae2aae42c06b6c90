/* This tab as a peer: its status (state, backend, warm models, queue, tok/s) that the room and the
 * other peers see, its model loads (one at a time; the worker keeps one model warm), and the
 * LocalRunner it lends mesh.js to run jobs here, its own and others'. */

export class Peer {
  status = { state: "loading", backend: "", models_warm: [], queue: 0, tok_s: 0, pause_reason: null, links: [], serving: [] };
  mesh = null; // the Mesh, once made: it publishes the status to the room
  // Whether and how this page serves others (pause.js): nobody's jobs until the user shares.
  sharing = { share: false, download_mb: 0, max_jobs: 1 };
  pauseReason = "sharing_off";

  #client;
  #catalogue;
  #hooks;
  #loads = new Map(); // model id → promise of its "ready"
  #loadQueue = Promise.resolve();
  #loadsPending = 0;

  /**
   * client: the InferenceClient; catalogue: {ids() → [model ids], entry(id) → entry | null};
   * hooks: onStatus(status) after every change, onLoaded(entry, ready), onLoadFailed(entry, error).
   */
  constructor(client, catalogue, hooks) {
    this.#client = client;
    this.#catalogue = catalogue;
    this.#hooks = hooks;
  }

  update(changes) {
    Object.assign(this.status, changes);
    // A paused page says so whatever else it is doing (loading a model for its own person, say):
    // the room and the server must not offer it work, and they read only `state`.
    if (this.pauseReason) this.status.state = "paused";
    else if (this.status.state === "paused") this.status.state = this.state;
    this.status.pause_reason = this.pauseReason;
    const status = { ...this.status, models_warm: [...this.status.models_warm] };
    this.#hooks.onStatus(status);
    this.mesh?.publish(status);
  }

  /** Busy means this browser's model is generating, for this page or for another peer. Paused
   * means it takes no jobs of others now (its own person's prompts still run). */
  get state() {
    if (this.pauseReason) return "paused";
    return this.#loadsPending ? "loading" : this.mesh?.computing ? "busy" : "idle";
  }

  /** pause.js says whether this page may serve (`reason` null) and within which limits. */
  pause(reason, sharing) {
    this.pauseReason = reason;
    this.sharing = sharing;
    this.update({});
  }

  /** Load `entry` once, one model at a time (the worker loads one at a time); a warm model answers at once. */
  load(entry) {
    if (!this.#loads.has(entry.id)) {
      this.#loadsPending += 1;
      const loading = this.#loadQueue.catch(() => null).then(() => {
        this.update({ state: "loading" });
        return this.#client.load(entry);
      }).then(
        (ready) => {
          this.#loadsPending -= 1;
          // The worker keeps one model warm, so loading this one evicted any other.
          for (const id of this.#loads.keys()) if (id !== entry.id) this.#loads.delete(id);
          this.update({ state: this.state, models_warm: [entry.id], backend: ready.device });
          performance.mark("mesh:model-ready", { detail: { model: entry.id } });
          this.#hooks.onLoaded(entry, ready);
          return ready;
        },
        (error) => {
          this.#loadsPending -= 1;
          this.#loads.delete(entry.id);
          // The worker let go of its warm model before it tried this one: nothing is warm now.
          for (const id of this.status.models_warm) this.#loads.delete(id);
          this.#hooks.onLoadFailed(entry, error);
          this.update({ state: this.state, models_warm: [] });
          throw error;
        },
      );
      this.#loads.set(entry.id, loading);
      this.#loadQueue = loading;
    }
    return this.#loads.get(entry.id);
  }

  /** What the mesh may do with this page's model: run jobs for this page and for other peers. */
  localRunner() {
    const cancelled = new Set(); // cancels that came while the model was still loading
    return {
      backend: () => this.status.backend,
      models: () => this.#catalogue.ids(),
      warm: () => this.status.models_warm,
      tokS: () => this.status.tok_s,
      entry: (id) => this.#catalogue.entry(id),
      sharing: () => this.sharing,
      paused: () => this.pauseReason,
      generate: async (job, onToken) => {
        const loading = performance.now();
        const warm = this.status.models_warm.includes(job.model);
        await this.load(this.#catalogue.entry(job.model));
        if (cancelled.delete(job.id)) return { text: "", tokens: 0, reason: "cancelled" };
        // The wait for the model travels with the answer, for the requester's trace of the job.
        const loaded = { load_ms: performance.now() - loading, warm };
        const done = { ...(await this.#client.generate(job, onToken)), ...loaded };
        // The worker's own decoding speed, for this page's jobs and other peers' alike: the cost
        // model compares it with the speeds other pages measure the same way.
        if (done.tok_s) this.update({ tok_s: done.tok_s });
        return done;
      },
      cancel: (id) => {
        cancelled.add(id);
        this.#client.cancel(id);
        setTimeout(() => cancelled.delete(id), 60_000);
      },
    };
  }
}
