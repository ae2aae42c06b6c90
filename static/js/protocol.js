/* The shapes and limits of the messages a peer takes from others: the data-channel protocol
 * (docs/mesh.md) and the server's API jobs over Socket.IO (docs/realtime.md, "API jobs"). Every
 * module that reads such a message checks it here, so each limit is written once on this side.
 * The job parameters' limits come from the server (src/mesh_nanollm/jobs/params.py, handed down in
 * every page's `job-limits` element), so the page and Python cannot drift. */

export const PROTOCOL_VERSION = 1;
export const JOB_LIMITS = JSON.parse(document.getElementById("job-limits").textContent);
// A job_run carries a prompt and a resume_text; nothing else comes near this.
export const MAX_MESSAGE_CHARS = 128 * 1024;
export const MAX_TEXT_CHARS = 60_000;

// Why a peer serves nobody for now (docs/mesh.md, "Sharing"); the server checks the same list.
export const PAUSE_REASONS = ["sharing_off", "hidden", "battery", "device_lost"];
// The download limit a peer may name when it declines a model as too large (0..100 000 MB).
export const SHARE_DOWNLOAD_MB_MAX = 100_000;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const text = (max, min = 0) => (v) => typeof v === "string" && v.length >= min && v.length <= max;
const int = (lo, hi) => (v) => Number.isInteger(v) && v >= lo && v <= hi;
const num = (lo, hi) => (v) => typeof v === "number" && Number.isFinite(v) && v >= lo && v <= hi;
const optional = (check) => (v) => v === undefined || check(v);
const id = (v) => typeof v === "string" && UUID.test(v);

/** Generation parameters a job may carry, each within the jobs API's range. */
const PARAM_RULES = {
  max_new_tokens: int(1, JOB_LIMITS.page_max_new_tokens),
  temperature: num(0, JOB_LIMITS.temperature_max),
  top_k: int(0, JOB_LIMITS.top_k_max),
  top_p: (v) => num(0, 1)(v) && v > 0,
  repetition_penalty: num(1, JOB_LIMITS.repetition_penalty_max),
  seed: int(0, JOB_LIMITS.seed_max),
};

/** Every data-channel message type and its fields; anything else, or any field failing its check, is dropped. */
const SCHEMAS = {
  hello: { peer_id: id, capabilities: isObject },
  job_offer: { job_id: id, model: text(200, 1), task: text(40, 1), prompt_tokens: int(0, 1_000_000) },
  job_accept: { job_id: id, eta_ms: num(0, 86_400_000) },
  // reason: busy | sharing_off | paused:<reason> | too_large (with limit_mb) | … (docs/mesh.md)
  job_decline: { job_id: id, reason: text(200), limit_mb: optional(int(0, SHARE_DOWNLOAD_MB_MAX)) },
  // A room prompt, or a conversation's chat messages (exactly one; checked in parseMessage). `chat`
  // is defined with the API's shapes below, so it is looked up when a message is checked.
  job_run: {
    job_id: id, model: text(200, 1), prompt: optional(text(8000, 1)), messages: optional((v) => chat(v)), params: isObject,
    resume_text: optional(text(MAX_TEXT_CHARS)),
  },
  token: { job_id: id, seq: int(1, 1_000_000), text: text(4000) },
  job_done: { job_id: id, text: text(MAX_TEXT_CHARS), metrics: isObject },
  job_error: { job_id: id, code: text(64, 1), message: text(2000) },
  job_cancel: { job_id: id },
  ping: { n: optional(int(0, Number.MAX_SAFE_INTEGER)) },
  pong: { n: optional(int(0, Number.MAX_SAFE_INTEGER)) },
};

/** The first field of `message` that fails `schema`, or null. */
function badField(schema, message) {
  for (const [field, check] of Object.entries(schema)) if (!check(message[field])) return field;
  return null;
}

/** The message, if it is a valid data-channel message; otherwise the reason it is not. */
export function parseMessage(data) {
  if (typeof data !== "string") return { problem: "not a text message" };
  if (data.length > MAX_MESSAGE_CHARS) return { problem: `${data.length} characters, over the ${MAX_MESSAGE_CHARS} cap` };
  let message;
  try {
    message = JSON.parse(data);
  } catch {
    return { problem: "not JSON" };
  }
  if (!isObject(message)) return { problem: "not a JSON object" };
  if (message.v !== PROTOCOL_VERSION) return { problem: `unsupported protocol version ${JSON.stringify(message.v)?.slice(0, 20)}` };
  const schema = Object.hasOwn(SCHEMAS, message.type) ? SCHEMAS[message.type] : null;
  if (!schema) return { problem: `unknown type ${JSON.stringify(message.type)?.slice(0, 40)}` };
  const field = badField(schema, message);
  if (field) return { problem: `${message.type}: bad or missing ${field}` };
  if (message.type === "job_run" && (message.prompt === undefined) === (message.messages === undefined)) {
    return { problem: "job_run: needs exactly one of prompt and messages" };
  }
  return { message };
}

/** What a peer's hello says it can do, reduced to known fields of sane size. */
export function readCapabilities(raw) {
  const list = (v) => (Array.isArray(v) ? v.filter(text(200, 1)).slice(0, 64) : []);
  return {
    backend: text(16)(raw.backend) ? raw.backend : "",
    models: list(raw.models),
    models_warm: list(raw.models_warm),
    state: ["idle", "busy", "loading", "paused"].includes(raw.state) ? raw.state : "idle",
    // A paused peer without a known reason is still paused (a newer peer's reason, say).
    pause_reason: raw.state === "paused" ? (PAUSE_REASONS.includes(raw.pause_reason) ? raw.pause_reason : "unknown") : null,
    queue: int(0, 100_000)(raw.queue) ? raw.queue : 0,
    tok_s: num(0, 1_000_000)(raw.tok_s) ? raw.tok_s : 0,
  };
}

/** Only the generation parameters we know, within their ranges. */
export function cleanParams(params) {
  const clean = {};
  for (const [key, ok] of Object.entries(PARAM_RULES)) if (ok(params[key])) clean[key] = params[key];
  return clean;
}

// ---- API jobs: the server → peer events over Socket.IO ------------------------------------------

const API_PROMPT_CHARS = 32_000;
const API_MESSAGES = 64;
const API_MESSAGES_CHARS = 64_000;
const ROLES = ["system", "user", "assistant"];
/** The API's ranges: an API job may ask for more tokens than a room page's prompt box allows. */
const API_PARAM_RULES = {
  ...PARAM_RULES,
  max_new_tokens: int(1, JOB_LIMITS.api_max_new_tokens),
  seed: int(Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER), // a negative one is not honoured (docs/mesh.md)
  stop: (v) => Array.isArray(v) && v.length <= 4 && v.every(text(64, 1)), // the API's stop strings (docs/gateway.md)
};

const chatMessage = (v) => isObject(v) && ROLES.includes(v.role) && text(API_PROMPT_CHARS)(v.content);
const chat = (v) =>
  Array.isArray(v) && v.length >= 1 && v.length <= API_MESSAGES && v.every(chatMessage) &&
  v.reduce((sum, m) => sum + m.content.length, 0) <= API_MESSAGES_CHARS;

const API_SCHEMAS = {
  job_run: {
    job_id: id,
    model: text(200, 1),
    prompt: optional(text(API_PROMPT_CHARS, 1)),
    messages: optional(chat),
    params: isObject,
    resume_text: optional(text(MAX_TEXT_CHARS)),
    username: optional(text(200)), // who asked, for the serving line; optional, the page copes without
  },
  job_cancel: { job_id: id },
};

/** An API job event from the server (`type`: job_run | job_cancel), or why it is not one. */
export function parseApiEvent(type, payload) {
  if (!isObject(payload)) return { problem: `${type}: not an object` };
  const field = badField(API_SCHEMAS[type], payload);
  if (field) return { problem: `${type}: bad or missing ${field}` };
  if (type !== "job_run") return { message: payload };
  if ((payload.prompt === undefined) === (payload.messages === undefined)) return { problem: "job_run: needs exactly one of prompt and messages" };
  for (const [key, value] of Object.entries(payload.params)) {
    const ok = Object.hasOwn(API_PARAM_RULES, key) ? API_PARAM_RULES[key] : null;
    if (ok && !ok(value)) return { problem: `job_run: params.${key} out of range` };
  }
  const params = {};
  for (const key of Object.keys(API_PARAM_RULES)) if (payload.params[key] !== undefined) params[key] = payload.params[key];
  return { message: { ...payload, params } };
}

// The worker's reasons, in the API's words: eos is a natural stop, context a length limit.
const API_REASONS = { eos: "stop", stop: "stop", length: "length", context: "length", cancelled: "cancelled" };

/** The Socket.IO event and payload that carry a serving message (token, job_done, job_error) to the server. */
export function toServer(message, backend) {
  const { type, ...payload } = message;
  if (type === "token") return ["job_token", payload];
  if (type !== "job_done") return [type, payload];
  const { tokens = 0, prompt_tokens, ttft_ms, tok_s, total_ms, reason } = payload.metrics;
  const metrics = { tokens, reason: API_REASONS[reason] ?? "stop", backend: backend || "" };
  for (const [key, value] of Object.entries({ prompt_tokens, ttft_ms, tok_s, total_ms })) if (typeof value === "number") metrics[key] = value;
  return ["job_done", { job_id: payload.job_id, text: payload.text, metrics }];
}
