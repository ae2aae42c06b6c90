/* This page's inference lane: its model runs one generation at a time, for this page or for
 * others, and the lane says how long until it could start one more (the cost model's local half,
 * docs/mesh.md). */

export const DEFAULT_TOK_S = { webgpu: 40, wasm: 20 };
const LOAD_BASE_MS = 1500;
const LOAD_BYTES_PER_MS = 10_000; // 10 MB/s for a model this browser still has to fetch
const PREFILL_SPEEDUP = 8; // a prompt token costs about an eighth of a generated one

export class InferenceLane {
  #tail = Promise.resolve();
  #slots = []; // {id, max, produced, running} of what the lane holds, for time estimates
  #onChange;

  /** `onChange()` runs when a generation starts or ends. */
  constructor(onChange) {
    this.#onChange = onChange;
  }

  /** Whether the inference worker is generating, for whoever. */
  get computing() {
    return this.#slots.some((slot) => slot.running);
  }

  /** Run `work(slot)` when the inference worker is free. The slot's max and produced tokens size
   * the wait quoted to others; `work` keeps `slot.produced` current. */
  add(job, work) {
    const slot = { id: job.id, max: job.params.max_new_tokens ?? 128, produced: 0, running: false };
    this.#slots.push(slot);
    const run = this.#tail.then(async () => {
      slot.running = true;
      const working = work(slot);
      this.#onChange(); // after the generation is under way: telling the room can wait a moment
      return working;
    }).finally(() => {
      this.#slots = this.#slots.filter((s) => s !== slot);
      this.#onChange();
    });
    this.#tail = run.catch(() => null);
    return run;
  }

  /** How long until `local` (the page's LocalRunner) could start producing tokens for `model`, in ms. */
  timeToStart(local, model, promptTokens) {
    const backend = local.backend();
    const tokS = local.tokS() || DEFAULT_TOK_S[backend] || DEFAULT_TOK_S.wasm;
    const waiting = this.#slots.reduce((sum, slot) => sum + Math.max(0, slot.max - slot.produced), 0);
    const entry = local.entry(model);
    const load = local.warm().includes(model) ? 0 : LOAD_BASE_MS + (entry?.size ?? 0) / LOAD_BYTES_PER_MS;
    return (waiting * 1000) / tokS + load + (promptTokens * 1000) / (tokS * PREFILL_SPEEDUP);
  }
}
