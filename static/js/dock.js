/* The dock: on every page of the app while this tab is a peer, what it is (room, state, warm model),
 * what it does (its own run, or a job it serves for someone else, with its speed), and Leave. The
 * dock's element is in base.html, kept across page swaps (hx-preserve), so this module binds it
 * once per document; peer-session.js is the same module instance room.js drives. */

import { session } from "/static/js/peer-session.js";

const dock = document.getElementById("peer-dock");
const part = (name) => dock.querySelector(`[data-testid="dock-${name}"]`);

// The job served now: its first sighting, for a speed measured as the person here sees it.
let served = null; // {job_id, at, tokens}

const STATES = { loading: "loading a model", busy: "generating", idle: "idle" };
// Why a paused tab serves nobody now (pause.js); its own prompts still run.
const PAUSED = { sharing_off: "not sharing", hidden: "paused: tab hidden", battery: "paused: battery low", device_lost: "paused: GPU lost" };

// What the dock last said aloud: a screen reader hears each change of state once, not each count.
let said = "";
// The connection state last seen ("reconnecting" once, however many tries it takes).
let linked = null;

/** The tab's place in its room's mesh, when it is not simply in it: {text} for the dock, and
 * {news} the first time it is so (the first join is not news; a rejoin is). */
function connection(room) {
  const { state, reason } = session.connection ?? {};
  const was = linked;
  linked = state;
  const news = (text) => (state === was ? "" : text);
  if (state === "reconnecting") return { text: "reconnecting…", news: news(`Lost the connection to ${room}; reconnecting…`) };
  // The reason's first clause fits the strip ("Sign in first"); the status region says it all.
  if (state === "refused") return { text: `not in the room (${reason.split(/[:.]/)[0]})`, news: news(`No longer in ${room}: ${reason}`) };
  if (state === "joined") return { text: "", news: was === "reconnecting" ? `Back in ${room}.` : "" };
  return { text: session.conn ? "" : "joining…", news: "" };
}

/** What this tab serves now: {state} for the screen reader, and {text} with its speed for the eye. */
function serving(work) {
  if (!work || !["queued", "running"].includes(work.state)) return { state: "", text: "" };
  const who = work.api ? "an API request" : `${work.username}'s job`;
  if (work.state === "queued") return { state: `Waiting to serve ${who}`, text: `Waiting to serve ${who}` };
  if (served?.job_id !== work.job_id) served = { job_id: work.job_id, at: performance.now(), tokens: work.tokens };
  const seconds = (performance.now() - served.at) / 1000;
  const rate = seconds > 0.5 ? ` — ${((work.tokens - served.tokens) / seconds).toFixed(0)} tok/s` : "";
  return { state: `Serving ${who}`, text: `Serving ${who}${rate}` };
}

function doing() {
  const run = session.run;
  if (run?.running) return { state: "Running your prompt", text: `Running your prompt — ${run.tokens} token${run.tokens === 1 ? "" : "s"}` };
  return serving(session.work);
}

function render() {
  const member = Boolean(session.slug);
  dock.hidden = !member;
  if (!member) return;
  const room = part("room");
  room.href = `/rooms/${encodeURIComponent(session.slug)}`;
  room.textContent = session.roomName || session.slug;
  const status = session.peer.status;
  const state = status.state === "paused" ? PAUSED[status.pause_reason] ?? "paused" : STATES[status.state] ?? status.state;
  const joined = connection(room.textContent);
  part("state").textContent = joined.text || state;
  dock.dataset.state = status.state;
  dock.dataset.connection = session.connection?.state ?? "";
  // The id the room knows this tab by now: none while it is out of the room, a new one after a rejoin.
  dock.dataset.peerId = (session.connection?.state === "joined" && session.conn?.peerId) || "";
  part("model").textContent = status.models_warm.length ? `warm: ${status.models_warm.join(", ")}` : "no model warm";
  const pending = session.pending ? ` · joins ${session.pending.name} next` : "";
  const now = doing();
  part("work").textContent = now.text + pending;
  // Said when it starts; when it is over, the room page says how it ended (its answer, or why not).
  if (joined.news) part("news").textContent = joined.news;
  else if (now.state + pending !== said) {
    said = now.state + pending;
    part("news").textContent = said;
  }
}

if (dock) {
  for (const type of ["status", "membership", "connection", "work", "run"]) session.addEventListener(type, render);
  session.addEventListener("run", (e) => {
    for (const type of ["token", "end"]) e.detail.run.addEventListener(type, render);
  });
  part("leave").addEventListener("click", () => session.leave({ cancelRun: true }));
  render();
}
