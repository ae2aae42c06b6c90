"""The JSON API under schemathesis: generated requests, valid and invalid, against a live server on
SQLite, authenticated with a real API token. Every answer must be a non-5xx that the document at
/schema declares (status, content type, headers and body)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from conftest import LiveServer, start_server
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from realtime.conftest import Account, sign_up
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.transport import Response
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# Response conformance, not "negative data rejection": a query value generated as an object goes
# out as repeated parameters the app reads as plain strings, which says nothing about the app.
# Examples per operation (valid and invalid together); FUZZ_EXAMPLES raises it for a longer run.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15"))


@schemathesis.check
def not_a_server_error_but_no_peer(ctx: CheckContext, response: Response, case: schemathesis.Case) -> bool | None:
    """No 5xx, except the documented 503 of the OpenAI-compatible routes: no peer ever joins the
    fuzz server's rooms, so a valid request to a room that exists (one the fuzzer made) has no peer."""
    if response.status_code == 503 and "/v1/" in case.operation.path:
        assert response.json()["error"]["code"] == "no_peer_available", response.text
        return None
    return not_a_server_error(ctx, response, case)


CHECKS = [
    not_a_server_error_but_no_peer,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
sent: list[str] = []


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of its own (FUZZ_DATABASE_URL picks another database), so the rooms and jobs the
    fuzzer makes never show up in other tests."""
    # No peer ever joins its rooms: the OpenAI-compatible routes answer a valid request with 503 at
    # once instead of waiting GATEWAY_QUEUE_WAIT for one (their streams are tested with peers in
    # tests/gateway/).
    server = start_server(tmp_path_factory.mktemp("fuzz"), os.environ.get("FUZZ_DATABASE_URL"), GATEWAY_QUEUE_WAIT="0")
    yield server
    server.stop()
    log = Path(server.log_path).read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture(scope="module")
def fuzz_account(fuzz_server: LiveServer) -> Iterator[Account]:
    account = asyncio.run(sign_up(fuzz_server.url))
    yield account
    # The fuzzer may never lock itself out: its token must still work after every request.
    rooms = httpx.get(f"{fuzz_server.url}/api/rooms", headers={"Authorization": f"Bearer {account.token}"})
    assert rooms.status_code == 200
    print(f"\nfuzzed {len(sent)} requests; server errors: {sum(status.startswith('5') for status in sent)}")


@pytest.fixture(scope="module")
def api_schema(fuzz_server: LiveServer) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/schema")
    # Nothing in the document may log the caller out or revoke its token.
    paths = set(schema.raw_schema["paths"])
    assert not [path for path in paths if "logout" in path or "token" in path], paths
    return schema


@pytest.mark.slow
def test_api_answers_as_its_schema_says(api_schema: schemathesis.BaseSchema, fuzz_account: Account) -> None:
    failures = []
    headers = {"Authorization": f"Bearer {fuzz_account.token}"}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def fuzz(case: schemathesis.Case) -> None:
                response = case.call(headers=headers, timeout=30)
                sent.append(str(response.status_code))
                case.validate_response(response, checks=CHECKS)

            try:
                fuzz()
            except Unsatisfiable:  # nothing in this operation's request can be made invalid
                assert mode == GenerationMode.NEGATIVE
            except (Exception, FailureGroup) as exc:  # noqa: BLE001 - gather every operation's failures
                failures.append(f"{operation.label} ({mode}): {exc}")
    assert not failures, "\n\n".join(failures)
