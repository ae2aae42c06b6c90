/* A model's own sampling defaults, read from its generation_config.json: from this browser's model
 * cache if transformers.js saved it there, else from where the model's files live (this server's
 * /models/, or the Hugging Face hub). A model without one, or out of reach, gets general defaults. */

const CACHE = "transformers-cache"; // transformers.js's env.cacheKey
const HUB = "https://huggingface.co"; // transformers.js's env.remoteHost
const known = new Map(); // model id → promise of its defaults

// transformers.js's own when a generation_config leaves a value out; 64 new tokens reads well here.
export const GENERAL = { temperature: 0, top_p: 1, top_k: 50, repetition_penalty: 1, max_new_tokens: 64 };

function configUrl(entry, localPath) {
  return entry.source === "hub"
    ? `${HUB}/${entry.id}/resolve/main/generation_config.json`
    : new URL(`${localPath}${entry.id}/generation_config.json`, location.href).href;
}

async function readConfig(url) {
  const cache = self.caches ? await caches.open(CACHE).catch(() => null) : null;
  const cached = await cache?.match(url);
  const response = cached ?? (await fetch(url, { credentials: "omit" }));
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.json();
}

/** The settings a run of `entry` starts from, and where they came from:
 * {values: {temperature, top_p, top_k, repetition_penalty, max_new_tokens}, from: "model" | "general"}. */
export function modelDefaults(entry, localPath = "/models/") {
  if (!known.has(entry.id)) {
    const reading = readConfig(configUrl(entry, localPath)).then((config) => {
      const pick = (key, ok) => (ok(config?.[key]) ? config[key] : GENERAL[key]);
      const positive = (v) => typeof v === "number" && v > 0;
      const values = {
        // A config that does not ask for sampling decodes greedily, whatever temperature it names.
        temperature: config?.do_sample === true ? pick("temperature", (v) => typeof v === "number" && v >= 0) : 0,
        top_p: pick("top_p", (v) => positive(v) && v <= 1),
        top_k: pick("top_k", (v) => Number.isInteger(v) && v > 0),
        repetition_penalty: pick("repetition_penalty", (v) => typeof v === "number" && v >= 1),
        max_new_tokens: pick("max_new_tokens", (v) => Number.isInteger(v) && v > 0),
      };
      return { values, from: "model" };
    }, () => {
      known.delete(entry.id); // out of reach now: ask again next time
      return { values: { ...GENERAL }, from: "general" };
    });
    known.set(entry.id, reading);
  }
  return known.get(entry.id);
}
