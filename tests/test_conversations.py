"""Conversations over HTTP: the API, the pages that list, rename and delete them, the job ↔ turn
links, and the Markdown renderer that lets no script or raw HTML through."""

from __future__ import annotations

import json
import re
from html import unescape
from uuid import uuid4

import pytest
from conftest import register
from litestar.testing import AsyncTestClient

from mesh_nanollm.conversations.markdown import render_markdown

HTMX = {"HX-Request": "true"}


async def switch_user(client: AsyncTestClient) -> str:
    client.cookies.clear()
    client.headers.pop("x-csrftoken", None)
    username = await register(client)
    client.headers["x-csrftoken"] = client.cookies["csrftoken"]
    return username


async def start(client: AsyncTestClient, **fields: object) -> dict:
    response = await client.post("/api/conversations", json={"room": "global"} | fields)
    assert response.status_code == 201, response.text
    return response.json()


async def add(
    client: AsyncTestClient, conversation_id: str, role: str, content: str, **fields: object
) -> dict:
    body = {"role": role, "content": content} | fields
    response = await client.post(f"/api/conversations/{conversation_id}/turns", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def finished_job(client: AsyncTestClient, prompt: str, output: str) -> str:
    response = await client.post(
        "/api/jobs", json={"room": "global", "model": "tiny-gpt2", "prompt": prompt}
    )
    job_id = response.json()["id"]
    for patch in (
        {"status": "running"},
        {"status": "succeeded", "output": output, "token_count": 3},
    ):
        assert (await client.patch(f"/api/jobs/{job_id}", json=patch)).status_code == 200
    return job_id


def rows(html: str) -> list[str]:
    return re.findall(r'data-testid="conversation-row" data-conversation-id="([^"]+)"', html)


# The renderer


@pytest.mark.parametrize(
    "markdown",
    [
        "<script>alert(1)</script>",
        '<img src="x" onerror="alert(1)">',
        "Text <b onmouseover=alert(1)>bold</b> and <iframe src=//evil></iframe>",
        "[click](javascript:alert(1)) [data](data:text/html,<script>alert(1)</script>)",
        '```html" onload="alert(1)\n<script>alert(1)</script>\n```',
        "![pic](https://example.org/x.png)",
        "<svg/onload=alert(1)>",
    ],
)
def test_markdown_lets_no_script_or_raw_html_through(markdown: str) -> None:
    html = render_markdown(markdown)
    tags = re.findall(r"<\s*([a-zA-Z0-9]+)", html)
    assert set(tags) <= {"p", "pre", "code", "a", "em", "strong"}, html
    assert (
        "<script" not in html
        and "<img" not in html
        and "<iframe" not in html
        and "<svg" not in html
    )
    assert not re.search(r"<[^>]*\son\w+\s*=", html), html  # no event handler attribute on any tag
    assert not re.search(r'href="(?!https?://)', html), html


def test_markdown_renders_code_blocks_tables_and_safe_links() -> None:
    html = render_markdown(
        "# Title\n\nSome **bold** and `x < y`.\n\n```python\nif a < b:\n    print('<tag>')\n```\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n[site](https://example.org/a?b=1)"
    )
    assert (
        "<h1>Title</h1>" in html
        and "<strong>bold</strong>" in html
        and "<code>x &lt; y</code>" in html
    )
    assert (
        "<pre><code class=\"language-python\">if a &lt; b:\n    print('&lt;tag&gt;')\n</code></pre>"
        in html
    )
    assert "<table>" in html and "<td>2</td>" in html
    assert '<a href="https://example.org/a?b=1" rel="nofollow noopener noreferrer">site</a>' in html


# The API


async def test_a_conversation_keeps_its_turns_in_order_and_answers_as_markdown(
    user_client: AsyncTestClient,
) -> None:
    conversation = await start(user_client, system_prompt="Be brief.")
    assert (
        conversation["title"] == ""
        and conversation["turns"] == []
        and conversation["room"] == "global"
    )
    await add(user_client, conversation["id"], "user", "What is **Markdown**? " + "word " * 20)
    job_id = await finished_job(user_client, "user: What\nassistant:", "It is *light*.")
    answer = await add(
        user_client,
        conversation["id"],
        "assistant",
        "It is *light*. <script>alert(1)</script>",
        job=job_id,
        model="tiny-gpt2",
        ran_on="ran in this browser",
        ttft_ms=12.5,
        tok_s=80.0,
        trimmed=1,
    )
    assert answer["position"] == 1 and answer["job"] == job_id
    assert answer["html"] == "<p>It is <em>light</em>. &lt;script&gt;alert(1)&lt;/script&gt;</p>\n"
    got = (await user_client.get(f"/api/conversations/{conversation['id']}")).json()
    assert [(t["position"], t["role"]) for t in got["turns"]] == [(0, "user"), (1, "assistant")]
    # A user turn is shown as typed (escaped), never as Markdown; the title comes from it.
    assert got["turns"][0]["html"] == "What is **Markdown**? " + "word " * 20
    assert got["title"].startswith("What is **Markdown**? word") and got["title"].endswith("word…")
    assert len(got["title"]) <= 61
    assert got["turns"][1] | {"html": None} == answer | {"html": None}
    assert got["system_prompt"] == "Be brief."


async def test_cutting_turns_removes_that_turn_and_every_later_one(
    user_client: AsyncTestClient,
) -> None:
    conversation = await start(user_client)
    for i, role in enumerate(["user", "assistant", "user", "assistant"]):
        await add(user_client, conversation["id"], role, f"turn {i}")
    response = await user_client.delete(f"/api/conversations/{conversation['id']}/turns/2")
    assert response.status_code == 204
    got = (await user_client.get(f"/api/conversations/{conversation['id']}")).json()
    assert [t["content"] for t in got["turns"]] == ["turn 0", "turn 1"]
    # The next turn takes the freed place: a regenerated answer replaces the old one.
    assert (await add(user_client, conversation["id"], "user", "again"))["position"] == 2


async def test_lists_are_per_user_and_per_room_newest_first(user_client: AsyncTestClient) -> None:
    first = await start(user_client)
    second = await start(user_client)
    await add(user_client, first["id"], "user", "used last")
    room = (await user_client.post("/api/rooms", json={"name": "Side room"})).json()
    elsewhere = await start(user_client, room=room["slug"])
    listed = (await user_client.get("/api/conversations")).json()
    assert [c["id"] for c in listed] == [elsewhere["id"], first["id"], second["id"]]
    assert listed[1]["turns"] == 1 and listed[1]["title"] == "used last"
    in_global = (await user_client.get("/api/conversations", params={"room": "global"})).json()
    assert [c["id"] for c in in_global] == [first["id"], second["id"]]
    await switch_user(user_client)
    assert (await user_client.get("/api/conversations")).json() == []
    for method, path in [
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", "/turns"),
        ("DELETE", "/turns/0"),
    ]:
        body = (
            {"title": "mine"}
            if method == "PATCH"
            else {"role": "user", "content": "x"}
            if method == "POST"
            else None
        )
        response = await user_client.request(
            method, f"/api/conversations/{first['id']}{path}", json=body
        )
        assert (
            response.status_code == 404 and response.json()["detail"] == "No such conversation."
        ), (method, path)


async def test_bad_input_gets_json_errors(user_client: AsyncTestClient) -> None:
    conversation = await start(user_client)
    cases = [
        ("POST", "/api/conversations", {"room": "nowhere"}, 404),
        ("POST", "/api/conversations", {"room": "global", "extra": 1}, 400),
        (
            "POST",
            f"/api/conversations/{conversation['id']}/turns",
            {"role": "system", "content": "x"},
            400,
        ),
        (
            "POST",
            f"/api/conversations/{conversation['id']}/turns",
            {"role": "user", "content": "x" * 60_001},
            400,
        ),
        (
            "POST",
            f"/api/conversations/{conversation['id']}/turns",
            {"role": "assistant", "content": "x", "job": str(uuid4())},
            422,
        ),
        ("PATCH", f"/api/conversations/{conversation['id']}", {"title": "   "}, 422),
        ("PATCH", f"/api/conversations/{conversation['id']}", {"title": "x" * 121}, 400),
        ("GET", "/api/conversations/not-a-uuid", None, 404),
        ("GET", f"/api/conversations/{uuid4()}", None, 404),
    ]
    for method, path, body, status in cases:
        response = await user_client.request(method, path, json=body)
        assert response.status_code == status, (path, body, response.text)
        assert (
            response.headers["content-type"].startswith("application/json")
            and response.json()["detail"]
        )


async def test_a_job_of_another_user_or_room_cannot_be_claimed_by_a_turn(
    user_client: AsyncTestClient,
) -> None:
    theirs = await finished_job(user_client, "p", "o")
    await switch_user(user_client)
    conversation = await start(user_client)
    response = await user_client.post(
        f"/api/conversations/{conversation['id']}/turns",
        json={"role": "assistant", "content": "o", "job": theirs},
    )
    assert response.status_code == 422 and response.json()["fields"] == {
        "job": "Not one of your jobs."
    }
    room = (await user_client.post("/api/rooms", json={"name": "Other"})).json()
    response = await user_client.post(
        "/api/jobs", json={"room": room["slug"], "model": "tiny-gpt2", "prompt": "p"}
    )
    response = await user_client.post(
        f"/api/conversations/{conversation['id']}/turns",
        json={"role": "assistant", "content": "o", "job": response.json()["id"]},
    )
    assert response.status_code == 422 and response.json()["fields"] == {
        "job": "It ran in another room."
    }


# Pages


async def test_job_page_and_turn_link_each_other(user_client: AsyncTestClient) -> None:
    conversation = await start(user_client)
    await add(user_client, conversation["id"], "user", "Tell me a story")
    job_id = await finished_job(user_client, "user: Tell me a story\nassistant:", "Once")
    await add(user_client, conversation["id"], "assistant", "Once", job=job_id)
    page = (await user_client.get(f"/jobs/{job_id}")).text
    link = re.search(
        r'data-testid="job-conversation"><a href="([^"]+)">([^<]+)</a> \(turn (\d+)\)', page
    )
    assert link and unescape(link.group(1)) == f"/rooms/global?conversation={conversation['id']}"
    assert link.group(2) == "Tell me a story" and link.group(3) == "2"
    room = (await user_client.get(link.group(1))).text
    data = re.search(
        r'<script type="application/json" id="conversation-data">(.*?)</script>', room, re.DOTALL
    )
    assert data
    opened = json.loads(data.group(1))
    assert opened["id"] == conversation["id"] and [t["job"] for t in opened["turns"]] == [
        None,
        job_id,
    ]
    # A job that wrote no turn names no conversation.
    other = await finished_job(user_client, "p", "o")
    assert 'data-testid="job-conversation"' not in (await user_client.get(f"/jobs/{other}")).text


async def test_room_page_lists_this_rooms_conversations_and_reopens_one(
    user_client: AsyncTestClient,
) -> None:
    empty = (await user_client.get("/rooms/global")).text
    assert "Send a prompt to start one." in empty and 'id="conversation-data"' not in empty
    conversation = await start(user_client)
    await add(user_client, conversation["id"], "user", "<b>hi</b>")
    page = (await user_client.get("/rooms/global")).text
    assert rows(page) == [conversation["id"]] and "&lt;b&gt;hi&lt;/b&gt;" in page
    reopened = (await user_client.get(f"/rooms/global?conversation={conversation['id']}")).text
    row = re.search(r'data-testid="conversation-row".*?</li>', reopened, re.DOTALL).group(0)
    assert 'aria-current="true"' in row and ">1 turn<" in row
    fragment = await user_client.get("/conversations", params={"room": "global"}, headers=HTMX)
    assert fragment.text.lstrip().startswith("<section") and rows(fragment.text) == [
        conversation["id"]
    ]
    # Someone else's conversation, or one of another room, does not open here.
    room = (await user_client.post("/api/rooms", json={"name": "Else"})).json()
    assert (
        await user_client.get(f"/rooms/{room['slug']}?conversation={conversation['id']}")
    ).status_code == 404
    assert (await user_client.get(f"/rooms/global?conversation={uuid4()}")).status_code == 404


async def test_conversations_page_renames_and_deletes(user_client: AsyncTestClient) -> None:
    conversation = await start(user_client)
    await add(user_client, conversation["id"], "user", "First question")
    page = (await user_client.get("/conversations")).text
    assert rows(page) == [conversation["id"]] and "First question" in page
    rename = f"/conversations/{conversation['id']}/rename"
    response = await user_client.post(rename, data={"title": "  Stories  "}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/conversations"
    assert (await user_client.get(f"/api/conversations/{conversation['id']}")).json()[
        "title"
    ] == "Stories"
    response = await user_client.post(rename, data={"title": " "})
    assert (
        response.status_code == 422
        and "A title cannot be empty." in response.text
        and 'aria-invalid="true"' in response.text
    )
    response = await user_client.post(rename, data={"title": "x" * 130})
    assert (
        response.status_code == 422
        and "At most 120 characters." in response.text
        and "x" * 130 in response.text
    )
    # Back to where the form came from, if it is one of ours.
    delete = f"/conversations/{conversation['id']}/delete"
    response = await user_client.post(
        delete, data={"next": "//evil.example/"}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == "/conversations"
    assert (await user_client.get(f"/api/conversations/{conversation['id']}")).status_code == 404
    assert "No conversations yet." in (await user_client.get("/conversations")).text
    response = await user_client.post(delete, data={})
    assert response.status_code == 404


async def test_deleting_a_conversation_keeps_its_jobs(user_client: AsyncTestClient) -> None:
    conversation = await start(user_client)
    job_id = await finished_job(user_client, "p", "answer")
    await add(user_client, conversation["id"], "assistant", "answer", job=job_id)
    assert (await user_client.delete(f"/api/conversations/{conversation['id']}")).status_code == 204
    job = await user_client.get(f"/api/jobs/{job_id}")
    assert job.status_code == 200 and job.json()["output"] == "answer"
