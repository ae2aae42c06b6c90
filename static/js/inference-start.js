/* Starts the room page's inference worker from the page's head: an async module runs as soon as it
 * arrives, long before room.js's module graph has, so the worker's transformers.js import and wasm
 * compile overlap the page's own loading. peer-session.js takes the client over (takeEarly). */

import { startEarly } from "/static/js/inference.js";

startEarly();
