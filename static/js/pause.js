/* Whether this page serves others now, and within which limits: its user's sharing choice (saved on
 * the server, handed down in the page's `sharing-settings` element, see templates/_sharing.html)
 * and the moments a page must not serve even when shared: its tab hidden, its battery low and not
 * charging, its WebGPU device lost. docs/mesh.md, "Sharing".
 *
 *   const pause = watchPause((reason, sharing) => peer.pause(reason, sharing));
 *   pause.deviceLost();   // the inference worker lost its GPU: paused until the page reloads
 *
 * reason: null (serving) | "sharing_off" | "hidden" | "battery" | "device_lost";
 * sharing: {share, download_mb, max_jobs}. onChange is called once at once, then on every change. */

const BATTERY_LOW = 0.2;
const NOT_SHARING = Object.freeze({ share: false, download_mb: 0, max_jobs: 1 });

/** The user's saved sharing settings; a page without them (or with a broken element) shares nothing. */
export function readSharing(doc = document) {
  const element = doc.getElementById("sharing-settings");
  try {
    const { share, download_mb, max_jobs } = JSON.parse(element?.textContent ?? "null") ?? {};
    const ok = share === true && Number.isInteger(download_mb) && download_mb >= 0 && Number.isInteger(max_jobs) && max_jobs >= 1;
    return ok ? { share, download_mb, max_jobs } : { ...NOT_SHARING };
  } catch {
    return { ...NOT_SHARING };
  }
}

/** Why this page should not serve now, from what it knows; null when it may. Sharing off comes
 * first: it is the user's choice, the others are the device's moments. */
export function pauseReason({ sharing, hidden, battery, deviceLost }) {
  if (!sharing.share) return "sharing_off";
  if (deviceLost) return "device_lost";
  if (hidden) return "hidden";
  if (battery && !battery.charging && battery.level < BATTERY_LOW) return "battery";
  return null;
}

export function watchPause(onChange, doc = document) {
  const known = { sharing: readSharing(doc), hidden: doc.visibilityState === "hidden", battery: null, deviceLost: false };
  let last = { reason: undefined, sharing: "" };
  const check = () => {
    const reason = pauseReason(known);
    const sharing = JSON.stringify(known.sharing);
    if (reason === last.reason && sharing === last.sharing) return;
    last = { reason, sharing };
    onChange(reason, { ...known.sharing });
  };
  doc.addEventListener("visibilitychange", () => {
    known.hidden = doc.visibilityState === "hidden";
    check();
  });
  // The switch on the page is an htmx form that swaps itself (and the settings element) once the
  // server has saved the choice; what the server saved is what counts, so re-read it then.
  // Pages without the element (History, a job) keep what the last one said: links swap pages
  // without a reload, and the peer keeps serving across them.
  new MutationObserver(() => {
    if (!doc.getElementById("sharing-settings")) return;
    known.sharing = readSharing(doc);
    check();
  }).observe(doc.body, { childList: true, subtree: true });
  // Not every browser has it (Firefox and Safari do not): without it, the battery never pauses us.
  navigator.getBattery?.().then((battery) => {
    const read = () => {
      known.battery = { level: battery.level, charging: battery.charging };
      check();
    };
    battery.addEventListener("levelchange", read);
    battery.addEventListener("chargingchange", read);
    read();
  }, () => {});
  check();
  return {
    deviceLost() {
      known.deviceLost = true;
      check();
    },
    get reason() {
      return last.reason;
    },
  };
}
