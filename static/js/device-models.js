/* "Models on this device": the model files transformers.js saved in this browser's Cache Storage
 * (its `transformers-cache`), grouped by model with their sizes; clears one model or all of them.
 * Keys there are the files' URLs: the hub's https://huggingface.co/<id>/resolve/<revision>/<file>,
 * and this server's /models/<id>/<file>. Anything else in that cache (ONNX Runtime's own files) is
 * not a model and is left alone. */

const CACHE = "transformers-cache";
const HUB = "https://huggingface.co";

const megabytes = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;

/** The model id a cached file belongs to, or null. */
function modelOf(url, localPath) {
  const { origin, pathname } = new URL(url);
  if (origin === HUB) return pathname.match(/^\/(.+?)\/resolve\/[^/]+\/.+$/)?.[1] ?? null;
  if (origin === location.origin && pathname.startsWith(localPath)) return pathname.slice(localPath.length).split("/")[0] || null;
  return null;
}

async function openCache() {
  if (!self.caches || !(await caches.has(CACHE))) return null;
  return caches.open(CACHE);
}

/** [{id, bytes, files: [Request]}] sorted by id. */
export async function listDeviceModels(localPath = "/models/") {
  const cache = await openCache();
  if (!cache) return [];
  const byModel = new Map();
  for (const request of await cache.keys()) {
    const id = modelOf(request.url, localPath);
    if (!id) continue;
    const response = await cache.match(request);
    const length = Number(response?.headers.get("content-length"));
    const bytes = Number.isFinite(length) && length > 0 ? length : (await response.blob()).size;
    const model = byModel.get(id) ?? { id, bytes: 0, files: [] };
    model.bytes += bytes;
    model.files.push(request);
    byModel.set(id, model);
  }
  return [...byModel.values()].sort((a, b) => a.id.localeCompare(b.id));
}

async function forget(models) {
  const cache = await openCache();
  if (!cache) return;
  for (const model of models) for (const request of model.files) await cache.delete(request);
}

/** Keep the panel `el` (templates/_device_models.html) in step with the cache. names(id) gives a
 * model's display name; onChange(ids) after each listing, with the ids of the models cached. */
export function mountDeviceModels(el, { names, localPath, onChange = () => {}, signal }) {
  const doc = el.ownerDocument;
  const list = el.querySelector("#device-model-list");
  const total = el.querySelector("#device-models-total");
  const clearAll = el.querySelector("#device-models-clear");
  let models = [];
  let queue = Promise.resolve();

  const render = () => {
    list.replaceChildren(...models.map((model) => {
      const item = doc.createElement("li");
      item.dataset.testid = "device-model";
      item.dataset.modelId = model.id;
      item.dataset.bytes = String(model.bytes);
      const name = doc.createElement("span");
      name.className = "grow";
      name.textContent = names(model.id);
      const size = doc.createElement("span");
      size.className = "small muted";
      size.textContent = `${megabytes(model.bytes)} · ${model.files.length} file${model.files.length === 1 ? "" : "s"}`;
      const clear = Object.assign(doc.createElement("button"), { type: "button", className: "small", textContent: "Clear" });
      clear.setAttribute("aria-label", `Clear ${names(model.id)} from this device`);
      clear.addEventListener("click", () => change(forget([model])));
      item.append(name, size, clear);
      return item;
    }));
    const bytes = models.reduce((sum, m) => sum + m.bytes, 0);
    total.textContent = models.length ? `${megabytes(bytes)} in all` : "No model is saved in this browser yet: the first run of one downloads it.";
    clearAll.disabled = models.length === 0;
    el.dataset.state = "listed";
  };

  // Listings run one after another, so the last one always sees the last change.
  const refresh = () => {
    queue = queue.then(() => listDeviceModels(localPath)).then((found) => {
      models = found;
    }, (error) => {
      models = [];
      console.warn("Models on this device: the browser's cache could not be read.", error);
    }).then(() => {
      if (signal.aborted) return;
      render();
      onChange(models.map((m) => m.id));
    });
    return queue;
  };

  const change = async (work) => {
    el.dataset.state = "clearing";
    await work;
    await refresh();
  };

  clearAll.addEventListener("click", () => change(forget(models)), { signal });
  refresh();
  return { refresh, cached: () => models.map((m) => m.id) };
}
