"""A second person on the same in-process test client: their own cookies and CSRF header, swapped
in for each request. (A second AsyncTestClient would run the app's lifespan again, on another
event loop, and close the first one's Postgres pool from there.)"""

from __future__ import annotations

from typing import Any

import httpx
from litestar.testing import AsyncTestClient


class SecondBrowser:
    def __init__(self, client: AsyncTestClient) -> None:
        self._client = client
        self.cookies = httpx.Cookies()
        self.headers: dict[str, str] = {}

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        client = self._client
        their_cookies, their_csrf = client.cookies, client.headers.pop("x-csrftoken", None)
        client.cookies = self.cookies
        client.headers.update(self.headers)
        try:
            return await client.request(method, url, **kwargs)
        finally:
            self.cookies = client.cookies
            for name in self.headers:
                client.headers.pop(name, None)
            client.cookies = their_cookies
            if their_csrf is not None:
                client.headers["x-csrftoken"] = their_csrf

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, **kwargs)
