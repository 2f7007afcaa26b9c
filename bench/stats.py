"""One timed generation (`Sample`) and the medians the report is made of (`Summary`).

Every system is timed the same way, by the code that consumes its stream:

    TTFT        = first non-empty content  - request sent
    decode tok/s = (tokens - 1) / (last content - first content)
    e2e tok/s    = tokens / (end of stream - request sent)

`tokens` is the number of tokens the system says it generated (engine `Finish`, Writer
`usage`, or `max_tokens` when an OpenAI stream ends with `finish_reason: "length"`), so a
run that stops early on EOS is normalised by what it really generated. The decode rate
divides by the `tokens - 1` gaps between the first and last token, not by `tokens`.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field


@dataclass
class Sample:
    ttft_s: float
    decode_s: float
    total_s: float
    tokens: int
    chunks: int
    finish_reason: str
    text: str
    foreign_cpus: float = 0.0  # CPUs' worth of other processes' work while it ran

    @property
    def decode_tps(self) -> float:
        return (self.tokens - 1) / self.decode_s if self.decode_s > 0 else float("nan")

    @property
    def e2e_tps(self) -> float:
        return self.tokens / self.total_s

    def record(self) -> dict:
        """The sample for the JSON file (the text is kept once per system, not per sample)."""
        out = {k: v for k, v in asdict(self).items() if k != "text"}
        return out | {"decode_tps": self.decode_tps, "e2e_tps": self.e2e_tps}


class TooSlowError(RuntimeError):
    """One request ran past its deadline: the machine is probably busy with something else."""


@dataclass
class Clock:
    """Started when the request is sent; `content()` is called for every non-empty delta."""

    deadline_s: float = 30.0
    start: float = field(default_factory=time.perf_counter)
    first: float | None = None
    last: float = 0.0
    chunks: int = 0
    parts: list[str] = field(default_factory=list)

    def content(self, text: str) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now
        self.chunks += 1
        self.parts.append(text)
        if now - self.start > self.deadline_s:
            raise TooSlowError(f"no end after {self.deadline_s:.0f}s and {self.chunks} chunks")

    def stop(self, tokens: int, finish_reason: str) -> Sample:
        end = time.perf_counter()
        if self.first is None:
            raise RuntimeError("the stream ended without any content")
        return Sample(
            ttft_s=self.first - self.start,
            decode_s=self.last - self.first,
            total_s=end - self.start,
            tokens=tokens,
            chunks=self.chunks,
            finish_reason=finish_reason,
            text="".join(self.parts),
        )


@dataclass
class Summary:
    decode_tps: float
    e2e_tps: float
    ttft_ms: float
    tokens: int
    finish_reasons: list[str]

    @classmethod
    def of(cls, samples: list[Sample]) -> Summary:
        return cls(
            decode_tps=statistics.median(s.decode_tps for s in samples),
            e2e_tps=statistics.median(s.e2e_tps for s in samples),
            ttft_ms=1000 * statistics.median(s.ttft_s for s in samples),
            tokens=int(statistics.median(s.tokens for s in samples)),
            finish_reasons=sorted({s.finish_reason for s in samples}),
        )
