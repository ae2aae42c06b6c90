/* Why a model could not be loaded, in words a person can act on. The worker names the reason from
 * the error it caught (loadFailureReason); the room page says it (describeLoadFailure). */

// Messages of fetch() failing to reach a server at all (Chromium, Firefox, Safari).
const NETWORK = /failed to fetch|networkerror|load failed|network error|err_(internet|name|connection|proxy|address)/i;
const MEMORY = /out of memory|allocation failed|bad_alloc|failed to allocate|cannot allocate|memory access out of bounds|\boom\b/i;
const HTTP_ERROR = /occurred while trying to load file|forbidden access to file/i;
// The hub answers 401, not 404, for a repository that does not exist (or is private).
const NOT_FOUND = /could not locate file|not found locally|unauthorized access to file/i;

/** One of: offline, hub_unreachable, not_found, hub_error, out_of_memory, needs_webgpu, other.
 * error: what loading threw; source: local | hub; device: the worker's backend; online: navigator.onLine. */
export function loadFailureReason(error, { source, device, online = true }) {
  const message = String(error?.message ?? error);
  if (error?.name === "ModelFileNotFoundError" || NOT_FOUND.test(message)) return "not_found";
  if (error?.name === "RangeError" || MEMORY.test(message)) return "out_of_memory";
  if (NETWORK.test(message) || (error?.name === "TypeError" && /fetch/i.test(message))) {
    return online ? (source === "hub" ? "hub_unreachable" : "server_unreachable") : "offline";
  }
  if (HTTP_ERROR.test(message)) return source === "hub" ? "hub_error" : "server_unreachable";
  if (device !== "webgpu" && /webgpu|jsep/i.test(message)) return "needs_webgpu";
  return "other";
}

/** What the page says about `reason` for the catalogue entry `entry` ({id, name, source, size}). */
export function describeLoadFailure(reason, entry, detail = "") {
  const name = entry?.name || entry?.id || "This model";
  const where = entry?.source === "hub" ? "the Hugging Face hub" : "this server";
  const text = {
    offline: `${name} could not be downloaded: this device is offline. Reconnect, then retry.`,
    hub_unreachable: `${name} could not be downloaded: the Hugging Face hub could not be reached (it may be down, or blocked on this network). Check the connection, then retry.`,
    server_unreachable: `${name} could not be downloaded from this server. Check the connection, then retry.`,
    not_found: `${name} could not be found on ${where}: its files have moved or the name is wrong. Pick another model.`,
    hub_error: `${name} could not be downloaded: the Hugging Face hub answered with an error. It is usually brief; retry in a minute.`,
    out_of_memory: `${name} does not fit in this device's memory. Close other tabs and retry, or pick a smaller model.`,
    needs_webgpu: `${name} needs WebGPU, which this browser does not offer here. Pick a model that runs on WASM, or open this page in a browser with WebGPU.`,
  }[reason];
  return text ?? `${name} could not be loaded${detail ? `: ${detail}` : "."}`;
}
