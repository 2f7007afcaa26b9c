"""What one decode step costs, learnt from the steps the engine runs: the speculation
planner's price list.

Measured on the embedded model (bench/speculative.py, docs/benchmarks.md), a step's time is
close to linear in what it holds: a fixed part, a jump from one token to two (llama.cpp's CPU
kernels switch from matrix-vector to matrix-matrix products), a part per token (the weights'
products) and a part per token and context position it attends over. So the model is

    seconds = fixed + wide * [tokens > 1] + per_token * tokens + per_attended * attended

where `attended` sums the positions of the batch's tokens. Its four weights are fitted by
least squares on relative error (a 2,048-token prompt step must not drown the one-token
steps the planner cares about), the past forgotten slowly so the fit follows the machine's
drift. The fit starts from a short calibration (`Scheduler._calibrate`: a few decodes in an
idle slot when the engine starts) and from then on learns from every step.
"""

from __future__ import annotations

import contextlib

import numpy as np

FORGET = 0.995  # weight of the past per observed step
REFIT_EVERY = 32  # observed steps between two solves of the least squares
# Calibration batches: (tokens, context before them), in one slot.
CALIBRATION = ((1, 0), (2, 0), (4, 0), (8, 0), (16, 0), (1, 512), (4, 512), (8, 512), (32, 0))


def features(tokens: int, attended: float) -> np.ndarray:
    return np.array([1.0, 1.0 if tokens > 1 else 0.0, float(tokens), attended / 1000.0])


class StepCost:
    """A running least-squares fit of a decode step's seconds (see the module's docstring)."""

    def __init__(self) -> None:
        self._xtx = np.eye(4) * 1e-9  # a little ridge: defined before any observation
        self._xty = np.zeros(4)
        self._weights: np.ndarray = np.zeros(4)
        self._since_fit = 0
        self.observed = 0

    def observe(self, tokens: int, attended: float, seconds: float) -> None:
        if seconds <= 0 or tokens <= 0:
            return
        x = features(tokens, attended) / seconds  # relative error: divide the row by y
        self._xtx = FORGET * self._xtx + np.outer(x, x)
        self._xty = FORGET * self._xty + x  # y / y
        self.observed += 1
        self._since_fit += 1
        if self._since_fit >= REFIT_EVERY or self.observed <= len(CALIBRATION) * 4:
            self.fit()

    def fit(self) -> None:
        self._since_fit = 0
        with contextlib.suppress(np.linalg.LinAlgError):  # keeps the last good fit
            self._weights = np.linalg.solve(self._xtx, self._xty)

    def seconds(self, tokens: int, attended: float) -> float:
        """The predicted time of a step; never below a microsecond per token."""
        return max(float(features(tokens, attended) @ self._weights), 1e-6 * tokens)

    @property
    def weights(self) -> tuple[float, ...]:
        """(fixed, wide, per token, per thousand attended positions), in seconds."""
        return tuple(float(w) for w in self._weights)


def attended(start: int, tokens: int) -> float:
    """The positions `tokens` tokens placed from `start` on attend over, summed."""
    return tokens * start + tokens * (tokens + 1) / 2
