/* ONNX Runtime's wasm module factory for inference-worker.js, in place of the vendored .mjs's own
 * (the worker points ORT's wasmPaths.mjs here): ORT instantiates the wasm the worker began fetching
 * and compiling as soon as it knew its backend, so a visit fetches and compiles it once, streaming. */

// For ORT's wasmPaths.mjs: ORT imports this URL, which is this very module (one module map per worker).
export const FACTORY_URL = import.meta.url;
let early = null; // {mjs, wasm, factory, compiled}: promises started by compileEarly

/** Start importing the pair's .mjs and compiling its wasm now, the way ORT would later: a streaming
 * compile of the immutable, HTTP-cached response, which V8 serves from its code cache on a later visit. */
export function compileEarly({ mjs, wasm }) {
  early = {
    mjs,
    wasm,
    factory: import(mjs),
    compiled: WebAssembly.compileStreaming(fetch(wasm, { credentials: "same-origin" })).catch((error) => {
      console.warn(`inference: early wasm compile failed (${error?.message ?? error}); compiling it again for ONNX Runtime.`);
      return null;
    }),
  };
}

/** What ORT calls with the emscripten module's options (it imports this module's default export). */
export default async function createModule(options) {
  const [{ default: factory }, compiled] = await Promise.all([early.factory, early.compiled]);
  // A second try fails loudly here (ORT's load fails) rather than inside emscripten, which would wait forever.
  const module = compiled ?? (await WebAssembly.compileStreaming(fetch(early.wasm, { credentials: "same-origin" })));
  return factory({
    ...options,
    instantiateWasm(imports, receive) {
      // Threaded builds post `module` on to ORT's own workers, which instantiate it themselves.
      WebAssembly.instantiate(module, imports).then((instance) => receive(instance, module));
      return {};
    },
  });
}
