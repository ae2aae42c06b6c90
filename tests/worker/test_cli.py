"""`mesh-nanollm worker` that cannot start says why in one line and exits non-zero, no traceback."""

from __future__ import annotations

import pytest
from conftest import free_port

from worker.conftest import MODEL, Room, Worker

pytestmark = pytest.mark.slow


def one_line(worker: Worker) -> str:
    code = worker.finish()
    assert code != 0
    assert len(worker.lines) == 1, worker.lines
    return worker.lines[0]


async def test_a_wrong_token_is_one_line(room: Room) -> None:
    worker = Worker("--server", room.url, "--token", "not-a-token", "--room", room.slug, "--model", MODEL)
    # What to do about it, not the server's wording for browsers.
    assert one_line(worker) == ("mesh-nanollm: the server refused the API token (mistyped, or revoked): "
                                "make one on the Settings page, under API tokens")


def test_an_unreachable_server_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    worker = Worker("--server", url, "--token", "t", "--model", MODEL)
    assert one_line(worker).startswith(f"mesh-nanollm: cannot reach the server at {url}")


@pytest.mark.parametrize("server", ["127.0.0.1:8792", "notaurl", "ftp://127.0.0.1", "http://127.0.0.1:port"])
def test_a_server_that_is_not_an_http_url_is_one_line(server: str) -> None:
    worker = Worker("--server", server, "--token", "t", "--model", MODEL)
    assert one_line(worker).startswith(f"mesh-nanollm: --server must be an http:// or https:// URL with a host, got {server!r}")
    assert worker.process.returncode == 1


def test_an_unknown_model_is_one_line() -> None:
    worker = Worker("--token", "t", "--model", "no-such-model")
    assert one_line(worker).startswith("mesh-nanollm: cannot load model 'no-such-model': ")


async def test_a_room_it_cannot_join_is_one_line(room: Room) -> None:
    worker = Worker("--server", room.url, "--token", room.account.token, "--room", "no-such-room", "--model", MODEL)
    assert one_line(worker).startswith("mesh-nanollm: cannot join room 'no-such-room': ")


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (["--model", MODEL], {}, ("mesh-nanollm: the worker needs an API token: --token or WORKER_TOKEN "
                                  "(make one on the Settings page, under API tokens)")),
        (["--token", "t"], {}, "mesh-nanollm: the worker needs at least one model: --model ID or WORKER_MODELS"),
        (["--token", "t", "--model", MODEL], {"WORKER_DEVICE": "tpu"}, "mesh-nanollm: --device must be cpu or cuda, got 'tpu'"),
        (["--token", "t", "--model", MODEL, "--jobs", "0"], {}, "mesh-nanollm: --jobs must be at least 1, got 0"),
    ],
)
def test_missing_or_bad_options_are_one_line(args: list[str], env: dict[str, str], line: str) -> None:
    assert one_line(Worker(*args, **env)).startswith(line)


def test_settings_come_from_the_environment() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    worker = Worker(WORKER_SERVER=url, WORKER_TOKEN="t", WORKER_MODELS=f" {MODEL} ,")
    assert one_line(worker).startswith(f"mesh-nanollm: cannot reach the server at {url}")


def test_ctrl_c_while_loading_models_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mesh_nanollm import cli
    from mesh_nanollm.worker import engine

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "load_engine", interrupted)
    with pytest.raises(SystemExit) as exited:
        cli.main(["worker", "--server", "http://127.0.0.1:9", "--token", "t", "--model", MODEL])
    assert exited.value.code == 130  # as a shell reports an interrupted command
    assert capsys.readouterr().err.splitlines() == [f"mesh-nanollm: stopped while loading model {MODEL!r}"]
