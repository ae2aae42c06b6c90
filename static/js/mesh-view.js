/* What the room page shows of the mesh: the line that says what this browser does for others
 * (mesh.js "work" events) and, in the peers panel, whether each peer is linked (mesh.js "link"). */

const WORK = {
  queued: (w) => `Waiting to run ${w.model} for ${w.username}`,
  running: (w) => `Running ${w.model} for ${w.username} — ${w.tokens} token${w.tokens === 1 ? "" : "s"} so far`,
  done: (w) => `Ran ${w.model} for ${w.username}: ${w.tokens} tokens`,
  cancelled: (w) => `${w.username} cancelled their job; stopped after ${w.tokens} tokens`,
  lost: (w) => `${w.username} left; stopped their job after ${w.tokens} tokens`,
  failed: (w) => `A job for ${w.username} failed here`,
};

// The same for an API job, which the server gave this browser for someone's script or app.
const API_WORK = {
  queued: (w) => `Waiting to run ${w.model} for an ${w.who}`,
  running: (w) => `Running ${w.model} for an ${w.who} — ${w.tokens} token${w.tokens === 1 ? "" : "s"} so far`,
  done: (w) => `Ran ${w.model} for an ${w.who}: ${w.tokens} tokens`,
  cancelled: (w) => `The ${w.who} was cancelled; stopped after ${w.tokens} tokens`,
  lost: (w) => `Lost the server; stopped the ${w.who} after ${w.tokens} tokens`,
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

/** Each row of the peers panel says whether this page has a data channel to that peer. */
export function showLinks(mesh) {
  for (const row of document.querySelectorAll('[data-testid="peer"]')) {
    const label = row.querySelector('[data-testid="peer-link"]');
    if (!label) continue;
    const link = mesh.links.get(row.dataset.peerId);
    const state = row.dataset.peerId === mesh.peerId ? "self" : link?.state ?? "none";
    row.dataset.link = state;
    label.textContent = state === "self" ? "this browser"
      : state === "open" && link.rtt !== null ? `linked · ${link.rtt.toFixed(1)} ms round trip` : LINK_LABELS[state];
  }
}
