"""Grammar-constrained sampling on llama.cpp: one `Constraint` per constrained sequence.

A constraint holds a llama.cpp grammar sampler (GBNF, rule `root`). It is kept out of the
sequence's sampler chain on purpose: applying a grammar checks every token of the
vocabulary (~7 ms a step for SmolLM2's 49k tokens, as long as the decode itself), so
`sample` first samples unconstrained and asks the grammar about that one token; only when
the grammar refuses it does it sample again with the grammar applied to every candidate.
That is what llama.cpp's own server does, and the result is the same as a grammar at the
head of the chain.

Lazy constraints (`triggers`) arm when a trigger word appears in the output, and the grammar
is then fed the text from that word on. We arm them here rather than with llama.cpp's lazy
grammar: when the token that completes a trigger carries text the grammar refuses, llama.cpp
throws a C++ exception through the C API, which aborts the whole process. Here every piece
is checked before it is accepted; a refused one leaves the constraint unarmed.

A request's grammar is parsed once (`Grammars.compile`, called off the event loop when the
request is planned) and every sequence that uses it gets a clone of that parsed grammar, so
`n` choices, and later requests with the same tools, never parse it again.

`Constraint` is engine thread only; `Grammars` may be used from any thread.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

import llama_cpp as L
import numpy as np

from inkstand.errors import EngineError

log = logging.getLogger("inkstand.engine")


def grammar_sampler(vocab, grammar: str):
    """A llama.cpp grammar sampler, or NULL when llama.cpp cannot parse `grammar`."""
    return L.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")


class _Parsed:
    """One parsed grammar sampler, freed when the last reference to it goes."""

    def __init__(self, sampler) -> None:
        self.sampler = sampler

    def __del__(self) -> None:
        L.llama_sampler_free(self.sampler)


class Grammars:
    """Parsed grammars by their text, the most recently used `size` of them kept.

    A sequence's sampler is a clone of the parsed grammar (`llama_sampler_clone` copies the
    rules and parse stacks; it does not parse again). An entry evicted while the engine
    thread clones it stays alive until the clone is done: the thread holds a reference.
    """

    def __init__(self, vocab, size: int = 32) -> None:
        self._vocab = vocab
        self._size = size
        self._lock = threading.Lock()
        self._parsed: OrderedDict[str, _Parsed] = OrderedDict()
        self.parses = 0  # grammars parsed so far (the tests count them)

    def compile(self, grammar: str) -> bool:
        """Parse `grammar` unless it is kept already; False when llama.cpp refuses it."""
        return self._get(grammar) is not None

    def new_sampler(self, grammar: str):
        """A fresh grammar sampler for one sequence; the caller frees it."""
        parsed = self._get(grammar)
        if parsed is None:
            raise EngineError("llama.cpp could not parse the request's grammar")
        return L.llama_sampler_clone(parsed.sampler)

    def clear(self) -> None:
        with self._lock:
            self._parsed.clear()

    def _get(self, grammar: str) -> _Parsed | None:
        with self._lock:
            parsed = self._parsed.get(grammar)
            if parsed is not None:
                self._parsed.move_to_end(grammar)
                return parsed
        sampler = grammar_sampler(self._vocab, grammar)  # outside the lock: it may take a while
        if not sampler:
            return None
        parsed = _Parsed(sampler)
        with self._lock:
            self.parses += 1
            self._parsed[grammar] = parsed
            while len(self._parsed) > self._size:
                self._parsed.popitem(last=False)
        return parsed


class Candidates:
    """A reusable `llama_token_data_array` over the whole vocabulary."""

    DTYPE = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])

    def __init__(self, n_vocab: int) -> None:
        self.n_vocab = n_vocab
        self.ids = np.arange(n_vocab, dtype=np.int32)
        self.data = np.zeros(n_vocab, dtype=self.DTYPE)
        self.array = _token_array(self.data)
        self.array_ref = ctypes.byref(self.array)
        self.one_data = np.zeros(1, dtype=self.DTYPE)
        self.one = _token_array(self.one_data)

    def load(self, logits):
        """Every token with its logit, unsorted, nothing selected."""
        self.data["id"] = self.ids
        self.data["logit"] = np.ctypeslib.as_array(logits, shape=(self.n_vocab,))
        self.data["p"] = 0.0
        _reset(self.array, self.n_vocab)
        return self.array_ref

    def selected(self) -> int:
        if self.array.selected < 0:
            raise EngineError("the sampler chain selected no token")
        return int(self.data["id"][self.array.selected])

    def allows(self, grammar, token: int) -> bool:
        """Whether `grammar` accepts `token` next (it sets a refused token's logit to -inf)."""
        self.one_data[0] = (token, 0.0, 0.0)
        _reset(self.one, 1)
        L.llama_sampler_apply(grammar, ctypes.byref(self.one))
        return bool(np.isfinite(self.one_data["logit"][0]))


def _token_array(data: np.ndarray):
    pointer = data.ctypes.data_as(ctypes.POINTER(L.llama_token_data))
    return L.llama_token_data_array(pointer, len(data), -1, False)


def _reset(array, size: int) -> None:
    array.size = size
    array.selected = -1
    array.sorted = False


class Constraint:
    """One sequence's grammar, armed from the start or once a trigger word is generated."""

    def __init__(
        self,
        new_sampler: Callable[[], object],
        triggers: tuple[str, ...],
        tokenize: Callable[[str], list[int]],
    ) -> None:
        self._new_sampler = new_sampler  # a fresh grammar sampler (`Grammars.new_sampler`)
        self._triggers = tuple(t.encode("utf-8") for t in triggers)
        self._tokenize = tokenize
        self._tail = b""  # the end of the output, while waiting for a trigger
        self.sampler = None if triggers else self._new_sampler()

    def sample(self, chain, candidates: Candidates, logits) -> int:
        """The next token: from the chain alone while unarmed, under the grammar once armed."""
        if self.sampler is None:
            L.llama_sampler_apply(chain, candidates.load(logits))
            token = candidates.selected()
        else:
            token = self._sample_armed(chain, candidates, logits)
        L.llama_sampler_accept(chain, token)
        return token

    def _sample_armed(self, chain, candidates: Candidates, logits) -> int:
        L.llama_sampler_apply(chain, candidates.load(logits))
        token = candidates.selected()
        if not candidates.allows(self.sampler, token):
            L.llama_sampler_apply(self.sampler, candidates.load(logits))
            L.llama_sampler_apply(chain, candidates.array_ref)
            token = candidates.selected()
            # Accepting a token the grammar refuses throws a C++ exception, which aborts
            # the process: check, and fail only this request if the grammar has no way on.
            if not candidates.allows(self.sampler, token):
                raise EngineError("the grammar allows no next token")
        L.llama_sampler_accept(self.sampler, token)
        return token

    def watch(self, piece: bytes, candidates: Candidates) -> None:
        """Note an unarmed sequence's output; arm when it completes a trigger word."""
        if self.sampler is not None or not self._triggers:
            return
        window = self._tail + piece
        starts = [s for s in (window.find(t) for t in self._triggers) if s >= 0]
        if starts:
            self._arm(window[min(starts) :].decode("utf-8", errors="ignore"), candidates)
        else:
            keep = max(len(t) for t in self._triggers) - 1
            self._tail = window[max(0, len(window) - keep) :] if keep else b""

    def _arm(self, text: str, candidates: Candidates) -> None:
        sampler = self._new_sampler()
        for token in self._tokenize(text):
            if not candidates.allows(sampler, token):
                log.info("generated text after a grammar trigger breaks the grammar: %r", text)
                L.llama_sampler_free(sampler)
                self._triggers = ()  # stays unconstrained
                return
            L.llama_sampler_accept(sampler, token)
        self.sampler = sampler

    def free(self) -> None:
        if self.sampler is not None:
            L.llama_sampler_free(self.sampler)
            self.sampler = None
