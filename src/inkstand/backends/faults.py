"""Failures on purpose at a backend's engine-thread calls: for tests, never for serving.

    faults = Faults()
    faults.arm("sample", skip=2)            # the third `sample` call from now raises
    engine = Engine(FaultyBackend(FakeBackend(), faults))

`FaultyBackend` wraps any backend and checks `faults` before each call named in `POINTS`;
everything else passes through untouched. A fault raises `InjectedFault` (a plain
`RuntimeError`, as a bug in our code or a ctypes error would) unless armed with another
exception. `Faults` is also what test observers use to fail on purpose.

The server wraps its models' backends only when the `fault_injection` setting
(`--fault-injection`, `INKSTAND_FAULT_INJECTION`) is set, for end-to-end tests of the engine's
failure handling: `sample@3,decode@10` makes the third `sample` call and the tenth `decode`
call fail. It is off by default, and a server started with it says so in its log.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

POINTS = ("begin", "fork", "decode", "sample", "logprob", "token_bytes", "is_eog", "end")


class InjectedFault(RuntimeError):
    """A failure made on purpose by `Faults`."""


@dataclass
class _Armed:
    point: str
    skip: int  # calls to let through first
    times: int  # calls to fail after that
    error: BaseException | None
    when: Callable[..., bool] | None  # only calls whose arguments satisfy it count


class Faults:
    """Which calls fail: armed from any thread, checked on the engine thread."""

    def __init__(self) -> None:
        self._armed: list[_Armed] = []
        self._lock = threading.Lock()
        self.raised = 0  # faults raised so far

    def arm(
        self,
        point: str,
        error: BaseException | None = None,
        *,
        skip: int = 0,
        times: int = 1,
        when: Callable[..., bool] | None = None,
    ) -> None:
        """Make `times` calls to `point` fail after letting `skip` through; `when(*args)`
        picks the calls that count (e.g. those for one sequence slot)."""
        with self._lock:
            self._armed.append(_Armed(point, skip, times, error, when))

    def check(self, point: str, *args: Any) -> None:
        """Raise if this call to `point` is one armed to fail."""
        if not self._armed:
            return
        due: _Armed | None = None
        with self._lock:
            for armed in list(self._armed):  # every armed fault counts every call
                if armed.point != point or (armed.when is not None and not armed.when(*args)):
                    continue
                if armed.skip:
                    armed.skip -= 1
                elif due is None:
                    due = armed
                    armed.times -= 1
                    if armed.times == 0:
                        self._armed.remove(armed)
            if due is None:
                return
            self.raised += 1
        raise due.error or InjectedFault(f"injected fault at {point}")

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """`point@call,...`: each named call (counting from 1) to `point` fails once."""
        faults = cls()
        for item in filter(None, (part.strip() for part in spec.split(","))):
            point, _, call = item.partition("@")
            if point not in POINTS or not call.isdigit() or int(call) < 1:
                raise ValueError(
                    f"bad fault {item!r}: expected point@call with a point among "
                    f"{', '.join(POINTS)} and a call number from 1"
                )
            faults.arm(point, skip=int(call) - 1)
        return faults


class FaultyBackend:
    """`backend`, with `faults` checked before each of its engine-thread calls."""

    def __init__(self, backend: Any, faults: Faults) -> None:
        self.backend = backend
        self.faults = faults

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.backend, name)
        if name not in POINTS:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.faults.check(name, *args)
            return attr(*args, **kwargs)

        return call
