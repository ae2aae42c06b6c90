"""What a page gives assistive technology and low vision: contrast of what is drawn, the names in
Chromium's accessibility tree, and what its live regions would have a screen reader say."""

from __future__ import annotations

from dataclasses import dataclass

from playwright.async_api import Page

# `window.a11y`: contrast(colour, element) between a CSS colour and what is painted behind `element`
# (its own background and its ancestors', translucent layers composited over the page's).
CONTRAST = """(() => {
  const parse = (css) => {
    const [r, g, b, a = 1] = css.match(/[\\d.]+/g).map(Number);
    return { r, g, b, a };
  };
  const over = (top, below) => ({
    r: top.r * top.a + below.r * (1 - top.a),
    g: top.g * top.a + below.g * (1 - top.a),
    b: top.b * top.a + below.b * (1 - top.a),
    a: 1,
  });
  const behind = (element) => {
    const layers = [];
    for (let node = element; node; node = node.parentElement) {
      const colour = parse(getComputedStyle(node).backgroundColor);
      if (colour.a > 0) layers.push(colour);
      if (colour.a >= 1) break;
    }
    return layers.reduceRight((below, top) => over(top, below), { r: 255, g: 255, b: 255, a: 1 });
  };
  const luminance = ({ r, g, b }) => {
    const linear = (c) => ((c /= 255) <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
  };
  const contrast = (css, element) => {
    const ground = behind(element);
    const [a, b] = [luminance(over(parse(css), ground)), luminance(ground)];
    return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  };
  return { contrast };
})()"""

# Roles a person operates: each needs a name a screen reader can say.
CONTROL_ROLES = {
    "button",
    "checkbox",
    "combobox",
    "listbox",
    "radio",
    "searchbox",
    "slider",
    "spinbutton",
    "switch",
    "textbox",
}
# Roles that head something: an empty one is a stop that says nothing.
HEADING_ROLES = {"heading", "columnheader", "rowheader"}


async def nameless(page: Page) -> list[str]:
    """The controls, headings and header cells of `page` (those rendered) that have no accessible
    name in Chromium's own accessibility tree, or only a placeholder, each as the start of its markup."""
    cdp = await page.context.new_cdp_session(page)
    try:
        tree = await cdp.send("Accessibility.getFullAXTree")
        found = []
        for node in tree["nodes"]:
            role = node.get("role", {}).get("value")
            if node.get("ignored") or role not in CONTROL_ROLES | HEADING_ROLES:
                continue
            name = node.get("name", {})
            # A placeholder is a hint that goes as soon as someone types, not a name (Chromium uses it as one).
            used = next(
                (
                    source
                    for source in name.get("sources", [])
                    if "value" in source and not source.get("superseded")
                ),
                {},
            )
            if str(name.get("value", "")).strip() and used.get("type") != "placeholder":
                continue
            remote = await cdp.send("DOM.resolveNode", {"backendNodeId": node["backendDOMNodeId"]})
            markup = await cdp.send(
                "Runtime.callFunctionOn",
                {
                    "objectId": remote["object"]["objectId"],
                    "functionDeclaration": "function () { return this.outerHTML.slice(0, 120); }",
                    "returnByValue": True,
                },
            )
            found.append(f"{role}: {markup['result']['value']}")
        return found
    finally:
        await cdp.detach()


# Each time a live region's content changes while it is not busy, or it stops being busy: the
# region and the text a screen reader would say then (regions that are hidden say nothing).
# Also every change of aria-busy, anywhere.
LIVE_REGIONS = """(() => {
  window.liveRegionLog = { said: [], busy: [] };
  const LIVE = '[aria-live]:not([aria-live="off"]), [role="status"], [role="alert"], [role="log"]';
  const name = (el) => el.id || el.dataset.testid || el.tagName.toLowerCase();
  const say = (region) => {
    if (region.closest('[aria-busy="true"]') || !region.checkVisibility()) return;
    const text = region.textContent.trim();
    if (text) window.liveRegionLog.said.push({ region: name(region), text });
  };
  const observer = new MutationObserver((records) => {
    const changed = new Set();
    for (const record of records) {
      const element = record.target.nodeType === 1 ? record.target : record.target.parentElement;
      if (record.type === "attributes") {
        if (record.oldValue === element.getAttribute("aria-busy")) continue; // set again, not changed
        window.liveRegionLog.busy.push({ element: name(element), busy: element.getAttribute("aria-busy") });
        if (element.getAttribute("aria-busy") !== "false") continue;
      }
      const region = element?.closest(LIVE);
      if (region) changed.add(region);
    }
    for (const region of changed) say(region);
  });
  observer.observe(document, { subtree: true, childList: true, characterData: true, attributes: true, attributeOldValue: true, attributeFilter: ["aria-busy"] });
})();"""


@dataclass
class Said:
    region: str
    text: str


async def said(page: Page) -> list[Said]:
    """What the live regions of `page` would have said so far (LIVE_REGIONS must be installed)."""
    return [Said(**entry) for entry in await page.evaluate("window.liveRegionLog.said")]


async def busy_changes(page: Page, element_id: str) -> list[str | None]:
    """Each value aria-busy took on the element with `element_id`, in order."""
    log = await page.evaluate("window.liveRegionLog.busy")
    return [entry["busy"] for entry in log if entry["element"] == element_id]
