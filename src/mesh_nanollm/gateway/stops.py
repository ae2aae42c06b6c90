"""Stop strings, enforced by the server on the text it relays. Peers get them too and stop there
themselves; this cut is what holds for a peer that does not (docs/gateway.md, "While it runs")."""

from __future__ import annotations


class StopCutter:
    """Cuts the relayed text at the first stop string. Until it is sure no stop string starts in
    them, the last few characters are held back, so a client never sees part of one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.text = ""
        self.sent = 0
        self.stopped = False
        self.stop_end = 0  # once stopped: where, in all the text fed, the first stop string completed

    def feed(self, text: str) -> str:
        """Add `text`; what may go to the client now."""
        if self.stopped:
            return ""
        start = max(0, len(self.text) - self.hold)
        self.text += text
        found = [(i, i + len(s)) for s in self.stops if (i := self.text.find(s, start)) >= 0]
        if found:
            cut = min(i for i, _ in found)
            self.stopped = True
            self.stop_end = min(end for _, end in found)
            self.text = self.text[:cut]
            return self._release(cut)
        return self._release(len(self.text) - self.hold)

    def flush(self) -> str:
        """The end of the text: whatever was held back goes out."""
        return self._release(len(self.text))

    def _release(self, end: int) -> str:
        if end <= self.sent:
            return ""
        out = self.text[self.sent : end]
        self.sent = end
        return out
