"""Headless Chromium for tests: its flags, one way to open a context, and what the pages did in it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Request, Route

from support.accounts import sign_up

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Quiet and hermetic on a closed network; WebRTC on loopback needs the last two.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--proxy-server=http://127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
    "--allow-loopback-in-peer-connection",
    "--use-fake-ui-for-media-stream",
]
SWIFTSHADER_ARGS = [*CHROMIUM_ARGS, "--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader"]
VIEWPORT = {"width": 1280, "height": 900}
PHONE_VIEWPORT = {"width": 390, "height": 844}  # a common phone, in CSS pixels


async def new_context(
    browser: Browser,
    base_url: str | None = None,
    session_cookie: str | None = None,
    viewport: dict | None = None,
) -> BrowserContext:
    """A fresh context (own cookies and caches), signed in when given a session cookie."""
    context = await browser.new_context(viewport=viewport or VIEWPORT)
    if session_cookie is not None:
        assert base_url, "a session cookie needs the server's URL"
        await sign_in(context, base_url, session_cookie)
    return context


async def evaluate_signed_in(browser: Browser, base_url: str, script: str) -> Any:
    """What `script` returns, run in a page (the history) of a newly signed-up account: for tests
    that import the app's own modules and call them directly."""
    account = await sign_up(base_url)
    context = await new_context(browser, base_url, account.session_cookie)
    page = await context.new_page()
    await page.goto(f"{base_url}/jobs")
    try:
        return await page.evaluate(script)
    finally:
        await context.close()


async def sign_in(context: BrowserContext, base_url: str, session_cookie: str) -> None:
    """Sign a context in as an account made over HTTP (support.accounts.sign_up)."""
    await context.add_cookies([{"name": "mesh_session", "value": session_cookie, "url": base_url}])


@dataclass
class RequestLog:
    """Every request the pages and their workers make, to prove nothing leaves the app's origin."""

    origin: str
    urls: list[str] = field(default_factory=list)

    def attach(self, context: BrowserContext) -> RequestLog:
        context.on("request", self._record)
        return self

    def _record(self, request: Request) -> None:
        self.urls.append(request.url)

    @property
    def off_origin(self) -> list[str]:
        local = (self.origin + "/", "blob:", "data:")
        return [url for url in self.urls if not url.startswith(local)]

    def count(self, path_prefix: str) -> int:
        return sum(url.startswith(self.origin + path_prefix) for url in self.urls)


# Says each violation on the console, where the watch hears it: the browser's own message about it
# reaches Playwright from documents but not from workers.
REPORT_VIOLATIONS = """addEventListener("securitypolicyviolation", (e) => console.error(
  `Content Security Policy violation: ${e.violatedDirective} blocked ${e.blockedURI || "inline code"} in ${self.location.href}`));
"""


WORKER_SCRIPTS = "**/static/js/*worker*.js"


@dataclass
class CspWatch:
    """Content-Security-Policy violations in a context's pages and in the workers they start.

    Documents get the listener as an init script; workers get none, so their scripts
    (WORKER_SCRIPTS) are served with the listener in front, under the app's own headers. Workers
    started from blob: URLs (ONNX Runtime's threads) are not watched: a refusal there fails the run."""

    violations: list[str] = field(default_factory=list)

    async def attach(self, context: BrowserContext) -> CspWatch:
        await context.add_init_script(REPORT_VIOLATIONS)
        await context.route(WORKER_SCRIPTS, self._instrument)
        context.on("console", self._console)
        return self

    async def _instrument(self, route: Route) -> None:
        response = await route.fetch()
        await route.fulfill(response=response, body=REPORT_VIOLATIONS + await response.text())

    def _console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.violations.append(message.text)


# A slower device, for tests that must act while a run streams (the tiny model writes its 250
# tokens within a second or two): the inference worker's token messages reach the page no faster
# than one token per `ms_per_token`, in order, with whatever follows them (its "done"). The worker
# computes as fast as ever; the page, the mesh and the jobs API see a slow, steady stream.
SLOW_TOKENS = """((msPerToken) => {
  const Native = window.Worker;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  window.Worker = class extends Native {
    #queue = Promise.resolve(); // one chain, so messages keep their order (timers alone may not)
    #seq = new Map();
    addEventListener(type, listener, options) {
      if (type !== "message") return super.addEventListener(type, listener, options);
      return super.addEventListener(type, (event) => {
        const data = event.data;
        let wait = 0;
        if (data?.type === "token") {
          wait = (data.seq - (this.#seq.get(data.id) ?? 0)) * msPerToken;
          this.#seq.set(data.id, data.seq);
        }
        this.#queue = this.#queue.then(() => wait && sleep(wait)).then(() => listener.call(this, event))
          .catch((error) => reportError(error)); // as a listener's error would be, and the chain goes on
      }, options);
    }
  };
})(%d);
"""


async def slow_tokens(context: BrowserContext, ms_per_token: int) -> None:
    """Make every page of `context` a slow device (SLOW_TOKENS)."""
    await context.add_init_script(SLOW_TOKENS % ms_per_token)
