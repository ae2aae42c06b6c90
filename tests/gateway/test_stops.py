"""Stop strings, cut by the server on the relayed text: what the client sees, batch by batch."""

from __future__ import annotations

import pytest

from mesh_nanollm.gateway.stops import StopCutter


@pytest.mark.parametrize(
    ("batches", "stops", "sent"),
    [
        (["Hello", " wor", "ld"], (), ["Hello", " wor", "ld"]),
        (["one E", "ND two"], ("END",), ["one", " "]),  # split across batches, nothing of it sent
        (["aXb"], ("X", "b"), ["a"]),  # the first stop string in the text wins
        (["EN", "D"], ("END",), ["", ""]),
        (["abc"], ("zz",), ["ab"]),  # one character held until the end
    ],
)
def test_stop_strings_cut_the_text_and_never_leak_a_part_of_one(batches: list[str], stops: tuple[str, ...], sent: list[str]) -> None:
    cutter = StopCutter(stops)
    out = [cutter.feed(batch) for batch in batches]
    assert out == sent
    final = cutter.flush()
    assert "".join(out) + final == cutter.text
    assert not any(stop in cutter.text for stop in stops)


def test_text_after_a_stop_string_is_dropped() -> None:
    cutter = StopCutter(("\n",))
    assert cutter.feed("line one\nline two") == "line one"
    assert cutter.stopped and cutter.feed("more") == "" and cutter.flush() == ""
