"""Page objects, driven through labels, roles and data-testid hooks."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import Browser, Locator, Page, expect

from support.accounts import Account, create_room, sign_up
from support.browser import new_context, sign_in

MODEL = "tiny-gpt2"


@dataclass
class AppPage:
    page: Page
    base_url: str

    async def screenshot(self, path: Path) -> Path:
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    @property
    def flash(self) -> Locator:
        return self.page.get_by_test_id("flash")

    @property
    def heading(self) -> Locator:
        return self.page.get_by_role("heading", level=1)

    async def follow(self, link: str) -> None:
        """Click a link of the main navigation (Rooms, History, Settings)."""
        await self.page.get_by_role("navigation", name="Main").get_by_role("link", name=link, exact=True).click()

    async def mark_document(self) -> None:
        """Mark this document, so `same_document` can tell a page swap (kept) from a load (gone)."""
        await self.page.evaluate("window.testMark = 'kept'")

    async def same_document(self) -> bool:
        return await self.page.evaluate("window.testMark === 'kept'")


@dataclass
class Dock:
    """The strip on every page that says what this tab does as a peer (base.html, dock.js)."""

    page: Page

    @property
    def root(self) -> Locator:
        return self.page.get_by_test_id("dock")

    @property
    def room(self) -> Locator:
        return self.page.get_by_test_id("dock-room")

    @property
    def state(self) -> Locator:
        return self.page.get_by_test_id("dock-state")

    @property
    def work(self) -> Locator:
        return self.page.get_by_test_id("dock-work")

    @property
    def leave(self) -> Locator:
        return self.page.get_by_test_id("dock-leave")

    async def peer_id(self) -> str:
        await expect(self.root).not_to_have_attribute("data-peer-id", "", timeout=20_000)
        return await self.root.get_attribute("data-peer-id") or ""


class RegisterPage(AppPage):
    async def open(self) -> RegisterPage:
        await self.page.goto(f"{self.base_url}/register")
        return self

    async def sign_up(self, username: str, password: str, lands_on: str = "/rooms") -> RoomsPage:
        # A boosted link swaps the page in a moment after the click: fill this form, not the last one.
        await expect(self.page.get_by_role("heading", name="Create an account")).to_be_visible()
        await self.page.get_by_label("Username").fill(username)
        await self.page.get_by_label("Password", exact=True).fill(password)
        await self.page.get_by_label("Repeat the password").fill(password)
        await self.page.get_by_role("button", name="Create account").click()
        await expect(self.page).to_have_url(f"{self.base_url}{lands_on}")
        return RoomsPage(self.page, self.base_url)


class RoomsPage(AppPage):
    @property
    def rows(self) -> Locator:
        return self.page.get_by_test_id("room-row")

    async def enter(self, slug: str) -> None:
        """Follow a room's link in the list."""
        await self.page.locator(f'[data-testid="room-row"][data-room="{slug}"] a').click()
        await expect(self.page).to_have_url(f"{self.base_url}/rooms/{slug}")

    async def create_room(self, name: str, private: bool = False) -> RoomPage:
        await self.page.get_by_label("Name").fill(name)
        if private:
            await self.page.get_by_role("checkbox", name=re.compile("^Private")).check()
        await self.page.get_by_role("button", name="Create room").click()
        await expect(self.page).to_have_url(re.compile(rf"^{re.escape(self.base_url)}/rooms/[a-z0-9-]+$"))
        return RoomPage(self.page, self.base_url)


@dataclass
class RoomPage(AppPage):
    """A room page: its peers panel, its run card (model, prompt, streamed output, metrics, the job it
    recorded) and, as one peer of a mesh, its links to the others."""

    account: Account | None = None
    console: list[str] = field(default_factory=list)  # filled by whoever listens (see open_peer)

    async def open(self, slug: str = "global", query: str = "") -> RoomPage:
        await self.page.goto(f"{self.base_url}/rooms/{slug}{query}")
        return self

    @property
    def invite_link(self) -> Locator:
        return self.page.get_by_test_id("invite-link")

    @property
    def invite_code(self) -> Locator:
        return self.page.get_by_test_id("invite-code")

    async def copy_invite_link(self) -> str:
        """Press "Copy link" and read back what the clipboard got (the context needs the permission)."""
        await self.page.get_by_role("button", name="Copy link").click()
        await expect(self.page.get_by_role("button", name="Copied")).to_be_visible()
        return await self.page.evaluate("navigator.clipboard.readText()")

    async def enter_code(self, code: str) -> None:
        """The code field of a private room's 403 page."""
        await self.page.get_by_label("Invite code").fill(code)
        await self.page.get_by_role("button", name="Join", exact=True).click()

    async def open_settings(self) -> RoomSettingsPage:
        await self.page.get_by_role("link", name="Room settings").click()
        await expect(self.heading).to_have_text("Room settings")
        return RoomSettingsPage(self.page, self.base_url)

    @property
    def heading(self) -> Locator:
        return self.page.get_by_role("heading", level=1)

    @property
    def flash(self) -> Locator:
        """The run's messages. The sharing card on the same page keeps its own (sharing_message)."""
        return self.page.locator('[data-testid="flash"]:not(#sharing [data-testid="flash"])')

    @property
    def sharing_message(self) -> Locator:
        """The sharing card's one message ("Saved." or what was wrong), not its fields' errors."""
        return self.page.locator('#sharing form > [data-testid="flash"]')

    @property
    def slug(self) -> str:
        return self.page.url.rsplit("/", 1)[-1]

    @property
    def model_picker(self) -> Locator:
        return self.page.get_by_test_id("model")

    @property
    def peers(self) -> Locator:
        return self.page.get_by_test_id("peers")

    @property
    def backend(self) -> Locator:
        return self.page.get_by_test_id("backend")

    @property
    def output(self) -> Locator:
        return self.page.get_by_test_id("output")

    @property
    def metrics(self) -> Locator:
        return self.page.get_by_test_id("metrics")

    @property
    def progress(self) -> Locator:
        return self.page.get_by_test_id("progress")

    @property
    def serving(self) -> Locator:
        return self.page.get_by_test_id("serving")

    @property
    def cancel(self) -> Locator:
        return self.page.get_by_test_id("cancel")

    @property
    def connection(self) -> Locator:
        """The line that says how the page's connection to the room is (hidden while joined)."""
        return self.page.get_by_test_id("connection")

    @property
    def job_link(self) -> Locator:
        return self.metrics.get_by_role("link", name="recorded in history")

    async def wait_until_warm(self, timeout: float = 60_000) -> None:
        await expect(self.backend).to_contain_text(f"warm: {MODEL}", timeout=timeout)
        # Idle, or paused when its user does not share (it still runs its own person's prompts).
        await expect(self.backend).to_have_attribute("data-state", re.compile("^(idle|paused)$"), timeout=timeout)

    async def run(self, prompt: str, max_tokens: int, mode: str = "local", style: str = "complete") -> None:
        """Run `prompt` as plain text to continue (`style="complete"`) or as a chat turn (`"chat"`)."""
        await self.page.get_by_test_id("model").select_option(MODEL)
        await self.page.get_by_label("Prompt as").select_option(style)
        await self.page.get_by_test_id("mode").select_option(mode)
        await self.page.get_by_test_id("prompt").fill(prompt)
        await self.page.get_by_label("Max tokens").fill(str(max_tokens))
        await self.page.get_by_test_id("run").click()

    async def recorded_job(self, timeout: float = 30_000) -> dict:
        """The finished run's job, read back through the JSON API the page recorded it with."""
        await expect(self.job_link).to_be_visible(timeout=timeout)
        job_id = await self.job_link.get_attribute("data-job-id")
        response = await self.page.request.get(f"{self.base_url}/api/jobs/{job_id}")
        assert response.ok, await response.text()
        return await response.json()

    async def run_and_wait(self, prompt: str, max_tokens: int, mode: str = "local") -> dict:
        """Run a prompt and return its job once recorded (a new one, not the previous run's)."""
        previous = await self.job_link.get_attribute("data-job-id") if await self.job_link.count() else None
        await self.run(prompt, max_tokens, mode)
        if previous:
            await expect(self.job_link).not_to_have_attribute("data-job-id", previous, timeout=30_000)
        return await self.recorded_job()

    async def own_peer_id(self) -> str:
        """This page's peer id, from its own row in the peers panel."""
        row = self.page.locator('[data-testid="peer"][data-link="self"]')
        await expect(row).to_have_count(1, timeout=20_000)
        return await row.get_attribute("data-peer-id") or ""

    def peer_row(self, peer_id: str) -> Locator:
        return self.page.locator(f'[data-testid="peer"][data-peer-id="{peer_id}"]')

    @property
    def linked_rows(self) -> Locator:
        return self.page.locator('[data-testid="peer"][data-link="open"]')

    async def wait_for_links(self, count: int, timeout: float = 20_000) -> None:
        """Until the peers panel shows `count` peers linked over a data channel."""
        await expect(self.linked_rows).to_have_count(count, timeout=timeout)

    async def console_lines(self, needle: str, count: int, timeout: float = 10.0) -> list[str]:
        """At least `count` console lines containing `needle` (console events arrive asynchronously)."""
        async with asyncio.timeout(timeout):
            while len(lines := [line for line in self.console if needle in line]) < count:
                await asyncio.sleep(0.05)
        return lines


@dataclass
class ChatPage(RoomPage):
    """A room page's conversation (conversation-view.js): its turns as `message` bubbles."""

    @property
    def messages(self) -> Locator:
        return self.page.get_by_test_id("message")

    def answer_of_job(self, job_id: str) -> Locator:
        return self.page.locator(f'[data-testid="message"][data-role="assistant"][data-job-id="{job_id}"]')

    async def roles(self) -> list[str]:
        return [await m.get_attribute("data-role") or "" for m in await self.messages.all()]

    async def set_system_prompt(self, text: str) -> None:
        await self.page.get_by_text("System prompt", exact=True).click()
        await self.page.get_by_test_id("system-prompt").fill(text)
        await self.page.get_by_test_id("system-prompt").blur()

    async def send(self, text: str, max_tokens: int, mode: str = "local") -> None:
        """Ask `text` as the next turn and wait until its answer is stored (rendered from the server)."""
        answers = self.page.locator('[data-testid="message"][data-role="assistant"] .markdown')
        before = await answers.count()
        await self.run(text, max_tokens, mode, style="chat")
        await expect(answers).to_have_count(before + 1, timeout=60_000)
        await expect(self.page.get_by_test_id("run")).to_be_enabled()

    async def edit(self, index: int, text: str) -> None:
        """Edit the `index`-th turn (a question; the system prompt not counted) and send it again."""
        bubble = self.page.locator('[data-testid="message"]:not([data-role="system"])').nth(index)
        await bubble.get_by_role("button", name="Edit").click()
        await bubble.get_by_label("Edit this prompt").fill(text)
        await bubble.get_by_role("button", name="Send").click()

    async def stored(self) -> dict:
        """The conversation as the server has it (the page's address names it once stored)."""
        await expect(self.page).to_have_url(re.compile(r"\?conversation=[0-9a-f-]{36}$"))
        conversation_id = self.page.url.rsplit("=", 1)[-1]
        response = await self.page.request.get(f"{self.base_url}/api/conversations/{conversation_id}")
        assert response.ok, await response.text()
        return await response.json()

    async def job(self, job_id: str) -> dict:
        response = await self.page.request.get(f"{self.base_url}/api/jobs/{job_id}")
        assert response.ok, await response.text()
        return await response.json()


class HistoryPage(AppPage):
    async def open(self) -> HistoryPage:
        await self.page.goto(f"{self.base_url}/jobs")
        return self

    @property
    def rows(self) -> Locator:
        return self.page.get_by_test_id("job-row")

    def row(self, job_id: str) -> Locator:
        return self.page.locator(f'[data-testid="job-row"][data-job-id="{job_id}"]')

    async def open_job(self, job_id: str) -> None:
        """Follow a row's link to its job page."""
        await self.row(job_id).locator("time").click()  # the room has a link of its own
        await expect(self.page).to_have_url(f"{self.base_url}/jobs/{job_id}")

    @property
    def empty_state(self) -> Locator:
        return self.page.get_by_text("No jobs yet.")

    async def create_job_through_api(self, room: str, prompt: str) -> str:
        """Record a job as the room page does: the page's own cookies plus its CSRF token."""
        csrf = await self.page.locator('meta[name="csrf-token"]').get_attribute("content")
        response = await self.page.request.post(
            f"{self.base_url}/api/jobs",
            data={"room": room, "model": MODEL, "prompt": prompt},
            headers={"x-csrftoken": csrf or ""},
        )
        assert response.status == 201, await response.text()
        return (await response.json())["id"]


class ApiReferencePage(AppPage):
    """/schema/docs: Swagger UI's markup, not ours, so its operations are found by their buttons'
    names (method, path, summary) and its live response by Swagger's own class names."""

    async def open(self) -> ApiReferencePage:
        await self.page.goto(f"{self.base_url}/schema/docs")
        await expect(self.page.get_by_test_id("api-reference")).to_be_visible()
        return self

    def operation(self, method: str, path: str) -> Locator:
        # Slashes escaped too: Playwright hands the pattern to the page as /source/.
        escaped = re.escape(path).replace("/", "\\/")
        name = re.compile(rf"^{method}\s*{escaped}(\s|$)")
        return self.page.get_by_role("button", name=name)

    @property
    def authorize_button(self) -> Locator:
        return self.page.get_by_role("button", name=re.compile("^Authorize"))

    async def try_it_out(self) -> None:
        await self.page.get_by_role("button", name="Try it out").click()
        await self.page.get_by_role("button", name="Execute").click()

    @property
    def live_response_body(self) -> Locator:
        return self.page.locator(".live-responses-table .response-col_description pre").first

    @property
    def live_response_status(self) -> Locator:
        return self.page.locator(".live-responses-table tbody .response-col_status").first


class RoomSettingsPage(AppPage):
    """/rooms/<slug>/settings: name, invite, members (owner); leave (member); delete (owner)."""

    @property
    def members(self) -> Locator:
        return self.page.get_by_test_id("member-row")

    async def remove_member(self, username: str) -> None:
        self.page.once("dialog", lambda dialog: dialog.accept())
        await self.page.get_by_role("button", name=f"Remove {username}").click()
        await expect(self.page.get_by_role("button", name=f"Remove {username}")).to_have_count(0)

    async def leave(self) -> RoomsPage:
        self.page.once("dialog", lambda dialog: dialog.accept())
        await self.page.get_by_role("button", name="Leave room").click()
        await expect(self.page).to_have_url(f"{self.base_url}/rooms")
        return RoomsPage(self.page, self.base_url)


class SettingsPage(AppPage):
    """/settings: API tokens, then the account (password, deletion)."""

    async def open(self) -> SettingsPage:
        await self.page.goto(f"{self.base_url}/settings")
        return self

    async def change_password(self, current: str, new: str, confirm: str | None = None) -> None:
        await self.page.get_by_label("Current password").fill(current)
        await self.page.get_by_label("New password", exact=True).fill(new)
        await self.page.get_by_label("Repeat the new password").fill(new if confirm is None else confirm)
        await self.page.get_by_role("button", name="Change password").click()

    async def delete_account(self, password: str) -> None:
        self.page.once("dialog", lambda dialog: dialog.accept())
        await self.page.get_by_label("Your password").fill(password)
        await self.page.get_by_role("button", name="Delete my account").click()


async def open_room(page: Page, base_url: str, slug: str = "global", account: Account | None = None) -> RoomPage:
    """`page` signed in (as `account`, or a new one) on room `slug`, its model warm."""
    account = account or await sign_up(base_url)
    await sign_in(page.context, base_url, account.session_cookie)
    room = await RoomPage(page, base_url, account=account).open(slug)
    await room.wait_until_warm()
    return room


async def owner_of_a_private_room(browser: Browser, base_url: str, name: str) -> tuple[Page, str]:
    """A new account's signed-in page, and the slug of a private room it owns (so the room's
    settings page is one of its pages)."""
    owner = await sign_up(base_url, "owner")
    room = await create_room(base_url, owner, name, private=True)
    context = await new_context(browser, base_url, owner.session_cookie)
    return await context.new_page(), room["slug"]


async def go_to_page(page: Page, base_url: str, path: str) -> None:
    """`path` loaded, as far as its heading."""
    await page.goto(f"{base_url}{path}")
    await expect(page.get_by_role("heading", level=1)).to_be_visible()
