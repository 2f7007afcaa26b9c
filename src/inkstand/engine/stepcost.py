"""What one decode step costs, learnt from the steps the engine runs: the speculation
planner's price list.

Measured on the embedded model (bench/speculative.py, docs/benchmarks.md), a step's time is
close to linear in what it holds: a fixed part per graph computation, a jump from one token to
two (llama.cpp's CPU kernels switch from matrix-vector to matrix-matrix products), a part per
token (the weights' products) and a part per token and context position it attends over. So
the model is

    seconds = per_ubatch * ubatches + wide * [tokens > 1] + per_token * tokens
              + per_attended * attended + bulk * [tokens >= BULK_TOKENS]

where `attended` sums the positions of the batch's tokens and `ubatches` is how many graph
computations llama.cpp splits the batch into. With one KV stream per slot it takes the same
number of tokens from every sequence in a ubatch, so a batch whose sequences bring 1, 1, 1
and 5 tokens is two computations (1 from each, then 4 of the last): `ubatches` is the number
of distinct token counts (`ubatches_of`). Measured: 16 sequences of one token, 55 ms; one of
them with 4 drafted tokens more, 75 ms. `bulk` is a step down: from 64 tokens on, ggml's
matrix products take a faster path (measured at 1,024 tokens of context, relative to one
token: 60 tokens 29.8x, 64 tokens 23.7x, 128 tokens 44.3x), so a draft that makes a step 64
tokens long costs less than one a few tokens shorter. The weights are fitted by
least squares on relative error (a 2,048-token prompt step must not drown the one-token
steps the planner cares about), the past forgotten slowly so the fit follows the machine's
drift, the first four never below zero (a short calibration cannot tell them all apart, and
a negative one would price some steps at nothing). The fit starts from a short calibration
(`Scheduler._calibrate`: a few decodes in an idle slot when the engine starts) and from then
on learns from every step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import numpy as np

FORGET = 0.995  # weight of the past per observed step
REFIT_EVERY = 32  # observed steps between two solves of the least squares
# Calibration batches: (context before them, tokens in each of one or two slots). Kept small
# (about half a second on one thread, every start pays it): the fit learns the cost of long
# contexts, and `bulk`, from the steps the engine runs (prompts are read in steps of many
# tokens).
CALIBRATION = (
    (0, (1,)), (0, (2,)), (0, (4,)), (0, (8,)), (0, (1, 1)), (0, (1, 4)),
)  # fmt: skip
CALIBRATION_ROUNDS = 2
BULK_TOKENS = 64  # steps of this many tokens or more take ggml's faster matrix products
# The most the step down saves (measured: 20 %): a fit from few steps can make it absurd,
# pricing a 64-token step at nothing.
BULK_LIMIT = 0.3
WEIGHTS = 5
NON_NEGATIVE = 4  # the first four weights; `bulk` is a step down, below zero


def features(tokens: int, ubatches: int, attended: float) -> np.ndarray:
    return np.array(
        [
            float(ubatches),
            1.0 if tokens > 1 else 0.0,
            float(tokens),
            attended / 1e3,
            1.0 if tokens >= BULK_TOKENS else 0.0,
        ]
    )


def ubatches_of(counts: Iterable[int]) -> int:
    """Graph computations for a batch whose sequences bring `counts` tokens (see above)."""
    return len({c for c in counts if c > 0})


class StepCost:
    """A running least-squares fit of a decode step's seconds (see the module's docstring)."""

    def __init__(self) -> None:
        self._xtx = np.eye(WEIGHTS) * 1e-9  # a little ridge: defined before any observation
        self._xty = np.zeros(WEIGHTS)
        # (per ubatch, wide, per token, per thousand attended positions, bulk), in seconds
        self.weights: tuple[float, ...] = (0.0,) * WEIGHTS
        self._since_fit = 0
        self.observed = 0

    def observe(self, tokens: int, ubatches: int, attended: float, seconds: float) -> None:
        if seconds <= 0 or tokens <= 0:
            return
        x = features(tokens, ubatches, attended) / seconds  # relative error: divide the row by y
        self._xtx = FORGET * self._xtx + np.outer(x, x)
        self._xty = FORGET * self._xty + x  # y / y
        self.observed += 1
        self._since_fit += 1
        if self._since_fit >= REFIT_EVERY or self.observed <= len(CALIBRATION) * 4:
            self.fit()

    def fit(self) -> None:
        """Solve the least squares, the weights that must not be negative held at zero one
        by one (the most negative first) until none is."""
        self._since_fit = 0
        free = list(range(WEIGHTS))
        with contextlib.suppress(np.linalg.LinAlgError):  # keeps the last good fit
            while True:
                solved = np.linalg.solve(self._xtx[np.ix_(free, free)], self._xty[free])
                negative = [(w, i) for w, i in zip(solved, free, strict=True)
                            if w < 0 and i < NON_NEGATIVE]  # fmt: skip
                if not negative:
                    break
                free.remove(min(negative)[1])
            weights = [0.0] * WEIGHTS
            for w, i in zip(solved, free, strict=True):
                weights[i] = float(w)
            self.weights = tuple(weights)

    def seconds(self, tokens: int, ubatches: int, attended: float) -> float:
        """The predicted time of a step; never below a microsecond per token. Plain floats:
        the planner asks this once per drafted token it weighs."""
        per_ubatch, wide, per_token, per_attended, bulk = self.weights
        predicted = per_ubatch * ubatches + (wide if tokens > 1 else 0.0) + per_token * tokens
        predicted += per_attended * attended / 1000.0
        if tokens >= BULK_TOKENS:  # a step down, never more than BULK_LIMIT of the step
            predicted = max(predicted + bulk, (1 - BULK_LIMIT) * predicted)
        return max(predicted, 1e-6 * tokens)

    def marginal(self, position: int) -> float:
        """What one token more at `position` adds to a step already over one token, in the
        same ubatches (and on the same side of `BULK_TOKENS`)."""
        per_token, per_attended = self.weights[2], self.weights[3]
        return max(per_token + per_attended * position / 1000.0, 1e-6)

    def cheaper_ahead(self, tokens: int) -> bool:
        """Whether a step of `tokens` tokens would get cheaper per token if it grew to
        `BULK_TOKENS` (the planner then looks that far before it gives up)."""
        return tokens < BULK_TOKENS and self.weights[4] < -1e-6  # a microsecond at least


def attended(start: int, tokens: int) -> float:
    """The positions `tokens` tokens placed from `start` on attend over, summed."""
    return tokens * start + tokens * (tokens + 1) / 2
