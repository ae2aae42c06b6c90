/* The model picker's companions on the room page: what the selected model is (model info), why one
 * could not be loaded (the failure card above the output, with Retry and the models that work
 * here), and the last model that loaded in this browser, to return the picker to after a failure. */

import { describeLoadFailure } from "/static/js/load-failure.js";

const LAST_MODEL = "mesh-nanollm:last-model";
const LICENSES = { "apache-2.0": "Apache 2.0", mit: "MIT" }; // how model cards spell the common ones

const megabytes = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;

function count(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e8 ? 0 : 1)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(0)} K`;
  return String(n);
}

const QUANTISATION = { q4: "4-bit (q4)", q4f16: "4-bit weights, fp16 activations (q4f16)", q8: "8-bit (q8)", int8: "8-bit (int8)", uint8: "8-bit (uint8)", fp16: "16-bit float (fp16)", fp32: "32-bit float (fp32)" };

/** The selected model's catalogue fields as a definition list; "not listed" where the catalogue has none. */
export function showModelInfo(dl, entry) {
  if (!entry) return dl.replaceChildren();
  const rows = [
    ["About", entry.description || "No description in the catalogue."],
    ["Parameters", entry.parameters ? count(entry.parameters) : "not listed"],
    ["Context", entry.context ? `${entry.context.toLocaleString("en")} tokens` : "not listed"],
    ["Quantisation", QUANTISATION[entry.dtype] ?? entry.dtype],
    ["Download", `${megabytes(entry.size)} from ${entry.source === "hub" ? "the Hugging Face hub" : "this server"}`],
    ["Licence", entry.license ? (LICENSES[entry.license] ?? entry.license) : "not listed"],
    ["Runs on", entry.backends.map((b) => ({ webgpu: "WebGPU", wasm: "WASM (CPU)" })[b] ?? b).join(", ")],
  ];
  dl.replaceChildren(...rows.flatMap(([term, value]) => {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = term;
    dd.textContent = value;
    dd.dataset.field = term.toLowerCase();
    return [dt, dd];
  }));
  if (entry.url) {
    const link = Object.assign(document.createElement("a"), { href: entry.url, textContent: "model files", rel: "noopener" });
    if (entry.source === "hub") link.target = "_blank";
    dl.lastChild.append(" · ", link);
  }
}

export function rememberWorkingModel(id) {
  try {
    localStorage.setItem(LAST_MODEL, id);
  } catch {
    // Storage refused (private mode, quota): the picker just keeps what it shows.
  }
}

export function lastWorkingModel() {
  try {
    return localStorage.getItem(LAST_MODEL);
  } catch {
    return null;
  }
}

/** Show why `entry` failed ({reason, message}), offering Retry and `alternatives` (entries that work
 * here); onPick(entry) when one is chosen, onRetry() for Retry. */
export function showFailure(card, { entry, reason, message }, alternatives, { onPick, onRetry }) {
  const text = card.querySelector("#model-error-text");
  const row = card.querySelector("#model-alternatives");
  const detail = String(message ?? "").replace(/^Could not load [^:]+: /, "");
  text.textContent = describeLoadFailure(reason, entry, detail);
  card.dataset.reason = reason ?? "other";
  card.dataset.model = entry.id;
  card.querySelector("#model-fallback").textContent = "";
  row.replaceChildren(...alternatives.map((alt) => {
    const button = Object.assign(document.createElement("button"), { type: "button", className: "small", textContent: alt.name });
    button.dataset.modelId = alt.id;
    button.addEventListener("click", () => onPick(alt));
    return button;
  }));
  card.querySelector("#model-alternatives-label").hidden = alternatives.length === 0;
  card.querySelector("#model-retry").onclick = onRetry;
  card.hidden = false;
  // Where the person looks after pressing Run, even on a short screen with the settings open.
  card.scrollIntoView({ block: "nearest" });
}

export function hideFailure(card) {
  card.hidden = true;
}
