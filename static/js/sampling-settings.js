/* The room page's Settings (templates/_sampling.html) and Max tokens: filled with a model's defaults,
 * read back as a job's params within the jobs API's limits (protocol.js's JOB_LIMITS). */

import { JOB_LIMITS } from "/static/js/protocol.js";

const FIELDS = ["temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens"];
const clamp = (value, lo, hi) => Math.min(Math.max(value, lo), hi);

export function bindSampling(doc) {
  const $ = (id) => doc.getElementById(id);
  return {
    inputs: {
      temperature: $("temperature"), top_p: $("top-p"), top_k: $("top-k"),
      repetition_penalty: $("repetition-penalty"), max_new_tokens: $("max-tokens"),
    },
    seed: $("seed"), summary: $("sampling-summary"), source: $("sampling-source"), reset: $("sampling-reset"),
  };
}

/** Fill the fields with `defaults` ({values, from}) of the model named `name`. */
export function applyDefaults(sampling, { values, from }, name) {
  const limited = {
    temperature: clamp(values.temperature, 0, JOB_LIMITS.temperature_max),
    top_p: clamp(values.top_p, 0.01, 1),
    top_k: clamp(values.top_k, 1, JOB_LIMITS.top_k_max),
    repetition_penalty: clamp(values.repetition_penalty, 1, JOB_LIMITS.repetition_penalty_max),
    max_new_tokens: clamp(values.max_new_tokens, 1, JOB_LIMITS.page_max_new_tokens),
  };
  for (const key of FIELDS) sampling.inputs[key].value = String(limited[key]);
  sampling.source.textContent = from === "model"
    ? `Defaults from ${name}'s generation_config.json.`
    : `${name}'s own defaults could not be read; these are general ones.`;
  sampling.source.dataset.from = from;
  summarize(sampling);
}

/** The settings as a job's params, or {error} naming the field that is out of range. */
export function readSampling(sampling) {
  const { inputs } = sampling;
  const number = (key) => Number(inputs[key].value);
  const checks = [
    ["max_new_tokens", "Max tokens", 1, JOB_LIMITS.page_max_new_tokens, true],
    ["temperature", "Temperature", 0, JOB_LIMITS.temperature_max, false],
    ["top_p", "Top-p", 0.01, 1, false],
    ["top_k", "Top-k", 1, JOB_LIMITS.top_k_max, true],
    ["repetition_penalty", "Repetition penalty", 1, JOB_LIMITS.repetition_penalty_max, false],
  ];
  const params = {};
  for (const [key, label, lo, hi, integer] of checks) {
    const value = number(key);
    const ok = inputs[key].value.trim() !== "" && (integer ? Number.isInteger(value) : Number.isFinite(value)) && value >= lo && value <= hi;
    if (!ok) return { error: `${label} must be ${integer ? "a whole number" : "a number"} from ${lo} to ${hi}.`, field: inputs[key] };
    params[key] = value;
  }
  const seedText = sampling.seed.value.trim();
  const seed = Number(seedText);
  if (seedText && !(Number.isSafeInteger(seed) && seed >= 0 && seed <= JOB_LIMITS.seed_max)) {
    return { error: `Seed must be a whole number from 0 to ${JOB_LIMITS.seed_max}, or empty for a random one.`, field: sampling.seed };
  }
  // Greedy decoding draws nothing: the sampling knobs would only make the record say otherwise.
  if (params.temperature === 0) {
    delete params.top_p;
    delete params.top_k;
  } else if (seedText) {
    params.seed = seed;
  }
  return { params };
}

/** Put a run's params back in the fields (the page came back while its run went on). */
export function showParams(sampling, params) {
  for (const key of FIELDS) if (params[key] !== undefined) sampling.inputs[key].value = String(params[key]);
  sampling.seed.value = params.seed ?? "";
  summarize(sampling);
}

/** The closed Settings say what the next run will do. */
export function summarize(sampling) {
  const { inputs, seed } = sampling;
  const temperature = Number(inputs.temperature.value);
  const parts = temperature > 0
    ? [`temperature ${inputs.temperature.value}`, `top-p ${inputs.top_p.value}`, `top-k ${inputs.top_k.value}`,
      seed.value.trim() ? `seed ${seed.value.trim()}` : "random seed"]
    : ["greedy"];
  if (Number(inputs.repetition_penalty.value) !== 1) parts.push(`repetition penalty ${inputs.repetition_penalty.value}`);
  sampling.summary.textContent = `(${parts.join(", ")})`;
}
