/* What the page says about its signaling connection (signaling.js "connection" events): nothing
 * while it is joined, how it is retrying while it is not, and why it stopped if the server refused. */

const TEXT = {
  connecting: (d) => `Cannot reach the room yet (${d.reason}); trying again… (attempt ${d.attempt})`,
  reconnecting: (d) => `Reconnecting to the room… (attempt ${d.attempt}). Prompts still run in this browser.`,
  refused: (d) => `Not connected to the room: ${d.reason} Prompts run in this browser only.`,
};

/** Show `detail` ({state, attempt, reason}) in `box`; its data-state and data-attempt say it too. */
export function showConnection(box, detail) {
  const { state, attempt } = detail;
  // The first try is not news: most pages join within a moment.
  const text = state === "connecting" && attempt === 1 ? "" : TEXT[state]?.(detail) ?? "";
  box.hidden = !text;
  box.textContent = text;
  box.className = `small flash ${state === "refused" ? "error" : "info"}`;
  box.dataset.state = state;
  box.dataset.attempt = attempt;
}
