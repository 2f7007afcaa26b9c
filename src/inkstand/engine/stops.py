"""Incremental text assembly: UTF-8 safe decoding and stop-sequence hold-back."""

from __future__ import annotations

import codecs


class TextAssembler:
    """Turns token bytes into releasable text.

    Bytes that end mid-character wait for the rest of the character. Text that could be the
    start of a stop sequence is held back until it is known not to be one; when a stop
    sequence completes, the text before it is released and `stopped` becomes true.
    """

    def __init__(self, stops: tuple[str, ...] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False

    def feed(self, raw: bytes) -> str:
        """Add one token's bytes; return the text that can be released now."""
        if self.stopped:  # nothing after a stop sequence is ever released
            return ""
        text = self._decoder.decode(raw)
        if not self._stops:
            return text
        return self._release(self._held + text)

    def flush(self) -> str:
        """End of generation: release everything still held (unless a stop matched)."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text

    def _release(self, text: str) -> str:
        cut = min((i for i in (text.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = self._longest_stop_prefix_suffix(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def _longest_stop_prefix_suffix(self, text: str) -> int:
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best
