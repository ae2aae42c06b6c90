/* What the room page shows of the mesh: the line that says what this browser does for others
 * (mesh.js "work" events) and, in the peers panel and its topology drawing, whether each peer is
 * linked and what it does now (mesh.js "link" and hellos). */

const tokens = (n) => `${n} token${n === 1 ? "" : "s"}`;

const WORK = {
  queued: (w) => `Waiting to run ${w.model} for ${w.username}`,
  running: (w) => `Running ${w.model} for ${w.username} — ${tokens(w.tokens)} so far`,
  done: (w) => `Ran ${w.model} for ${w.username}: ${tokens(w.tokens)}`,
  cancelled: (w) => `${w.username} cancelled their job; stopped after ${tokens(w.tokens)}`,
  // Their page left, or this one lost the room (a dropped connection, removed from a private room).
  lost: (w) => `Lost the link to ${w.username}; stopped their job after ${tokens(w.tokens)}`,
  failed: (w) => `A job for ${w.username} failed here`,
};

// The same for an API job, which the server gave this browser for someone's script or app.
const API_WORK = {
  queued: (w) => `Waiting to run ${w.model} for an ${w.who}`,
  running: (w) => `Running ${w.model} for an ${w.who} — ${tokens(w.tokens)} so far`,
  done: (w) => `Ran ${w.model} for an ${w.who}: ${tokens(w.tokens)}`,
  cancelled: (w) => `The ${w.who} was cancelled; stopped after ${tokens(w.tokens)}`,
  lost: (w) => `Lost the server; stopped the ${w.who} after ${tokens(w.tokens)}`,
  failed: (w) => `An ${w.who} failed here`,
};

/** What this browser does for other peers and API clients: the line under the backend badge. */
export function showWork(box, { detail }) {
  box.hidden = false;
  const who = detail.username ? `API request from ${detail.username}` : "API request";
  box.textContent = detail.api ? API_WORK[detail.state]?.({ ...detail, who }) ?? "" : WORK[detail.state]?.(detail) ?? "";
  box.dataset.state = detail.state;
  box.dataset.requester = detail.api ? "api" : detail.username;
  box.dataset.jobId = detail.job_id;
}

const LINK_LABELS = { connecting: "linking…", open: "linked", lost: "link lost", unreachable: "unreachable", none: "not linked" };

/** Show `state` (idle|busy|loading) on a peer's row and on its dot in the topology drawing. A
 * paused peer keeps the server's badge, which says why. */
function showState(row, node, state) {
  if (!["idle", "busy", "loading"].includes(state)) return;
  const badge = row.querySelector('[data-testid="peer-state"]');
  if (!badge) return;
  badge.textContent = state;
  badge.className = `badge state-${state}`;
  row.dataset.state = state;
  if (node) {
    node.classList.remove("state-idle", "state-busy", "state-loading");
    node.classList.add(`state-${state}`);
    node.dataset.state = state;
  }
}

/** Each row of the peers panel says whether this page has a data channel to that peer, and what
 * the peer does as the peer itself last said: its hello comes on the channel its tokens use, so a
 * peer that starts serving this page shows busy before its first token does, while the server's
 * rendering of the panel trails presence. This page's own row shows `ownState`. */
export function showLinks(mesh, ownState = mesh.status.state) {
  for (const row of document.querySelectorAll('[data-testid="peer"]')) {
    const label = row.querySelector('[data-testid="peer-link"]');
    if (!label) continue;
    const peerId = row.dataset.peerId;
    const link = mesh.links.get(peerId);
    const state = peerId === mesh.peerId ? "self" : link?.state ?? "none";
    row.dataset.link = state;
    label.textContent = state === "self" ? "this browser"
      : state === "open" && link.rtt !== null ? `linked · ${link.rtt.toFixed(1)} ms round trip` : LINK_LABELS[state];
    const node = document.querySelector(`[data-testid="topology-peer"][data-peer-id="${CSS.escape(peerId)}"]`);
    node?.classList.toggle("self", state === "self");
    if (state === "self") showState(row, node, ownState);
    else if (state === "open" && link.hello) showState(row, node, link.hello.state);
  }
}
