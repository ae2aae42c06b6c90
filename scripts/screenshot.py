"""Take the README's screenshots: start the app as the README does, sign up, create rooms, run a prompt.

Usage: uv run python scripts/screenshot.py   (writes docs/screenshot-rooms.png and docs/screenshot-room.png)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "bench"))  # bench/launch.py starts the app for the benchmarks too
import launch

DOCS = ROOT / "docs"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Quiet on a closed network: no background traffic to Google's services.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
ROOM_VIEWPORT = {"width": 1280, "height": 1300}


def start_app(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`uv run mesh-nanollm`, the README's command, on a fresh SQLite file in `tmp`."""
    port = launch.free_port()
    env = os.environ | {
        "DATABASE_URL": f"sqlite:///{tmp / 'screenshot.sqlite'}",
        "SECRET_KEY_FILE": str(tmp / "secret"),
        "PORT": str(port),
        "ICE_SERVERS": "[]",
    }
    env.pop("SECRET_KEY", None)
    log = (tmp / "server.log").open("wb")
    server = subprocess.Popen(["uv", "run", "mesh-nanollm"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    launch.wait_healthy(server, url, tmp / "server.log")
    return server, url


def sign_up(page: Page, url: str, username: str) -> None:
    page.goto(f"{url}/register")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password", exact=True).fill("correct horse battery")
    page.get_by_label("Repeat the password").fill("correct horse battery")
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(f"{url}/rooms")


def create_room(page: Page, url: str, name: str, private: bool = False) -> None:
    page.goto(f"{url}/rooms")
    page.get_by_label("Name").fill(name)
    if private:
        page.get_by_label("Private", exact=False).check()
    page.get_by_role("button", name="Create room").click()
    expect(page).not_to_have_url(f"{url}/rooms")


def run_prompt(page: Page, prompt: str) -> None:
    """Run a prompt on the default (tiny, local) model and wait for the whole answer."""
    expect(page.get_by_test_id("run")).to_be_enabled(timeout=30_000)
    page.get_by_test_id("prompt").fill(prompt)
    page.get_by_test_id("run").click()
    expect(page.get_by_test_id("output")).not_to_be_empty(timeout=60_000)
    expect(page.get_by_test_id("cancel")).to_be_disabled(timeout=60_000)
    expect(page.get_by_test_id("metrics")).to_contain_text("recorded in history", timeout=30_000)
    # The peers panel has caught up once this tab's row shows the run's speed. (A new account does
    # not share its device, so the row's badge reads "paused — not sharing" throughout.)
    me = page.locator('[data-testid="peer"][data-link="self"]')
    expect(me.get_by_role("img", name=re.compile(r"^Speed of its last"))).to_be_visible(timeout=10_000)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mesh-screenshot-") as tmp_name:
        server, url = start_app(Path(tmp_name))
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport=VIEWPORT)
                sign_up(page, url, "ada")
                create_room(page, url, "Reading group", private=True)
                create_room(page, url, "Lab bench")
                page.goto(f"{url}/rooms")
                page.screenshot(path=str(DOCS / "screenshot-rooms.png"))
                page.goto(f"{url}/rooms/lab-bench")
                run_prompt(page, "Once upon a time")
                # Taller, from the top: the model, the peers and the answer in one picture.
                page.set_viewport_size(ROOM_VIEWPORT)
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=str(DOCS / "screenshot-room.png"))
                browser.close()
        finally:
            server.terminate()
            server.wait(10)
    print(f"wrote {DOCS / 'screenshot-rooms.png'} and {DOCS / 'screenshot-room.png'}")


if __name__ == "__main__":
    main()
