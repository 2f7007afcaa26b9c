"""The embedded backend: llama.cpp in-process through llama-cpp-python's low-level C API.

We drive `llama_batch` / `llama_decode` and one C sampler chain per sequence directly; the
high-level `Llama` class keeps one sequence and samples in Python, which is what we avoid.
Native failures are translated to `EngineError` here and nowhere else.
"""

from __future__ import annotations

import ctypes
import logging
import math
from pathlib import Path

import numpy as np

from inkstand.backends.base import BatchEntry, KVFullError, ModelInfo, SamplingParams
from inkstand.backends.constraint import Candidates, Constraint, Grammars
from inkstand.errors import EngineError

logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)

import llama_cpp as L  # noqa: E402  (after quieting its logger, which it reads at load)

KV_BYTES = 2  # one cached key or value element: f16
UBATCH = 512  # tokens per graph computation: llama.cpp's default, its compute buffers' size


class LlamaCppBackend:
    """One llama.cpp model and context holding `n_seq_max` sequence slots.

    Each slot gets its own KV stream of `n_ctx` tokens (`kv_unified = False`): a token then
    attends only over its own sequence's cells. Copying a slot's KV into another (`fork`)
    copies the stream. See docs/benchmarks.md for how this compares with a unified buffer.

    A `decode` call takes up to `n_batch` tokens (2048, as llama-server): enough for the
    prompts of a whole burst of new requests in one call, so they all start generating in
    the same step. llama.cpp computes them `UBATCH` tokens at a time.
    """

    def __init__(
        self,
        path: str,
        *,
        n_ctx: int,
        n_threads: int,
        n_seq_max: int = 1,
        n_batch: int = 2048,
        kv_unified: bool = False,
    ) -> None:
        if not Path(path).is_file():
            raise EngineError(f"model file {path} does not exist")
        L.llama_backend_init()
        self._model = self._load_model(path)
        self._ctx = self._new_context(n_ctx, n_threads, n_seq_max, n_batch, kv_unified)
        self._vocab = L.llama_model_get_vocab(self._model)
        self._mem = L.llama_get_memory(self._ctx)
        self.n_batch = n_batch
        self.n_seq_max = n_seq_max
        self.n_vocab = L.llama_vocab_n_tokens(self._vocab)
        self._batch = L.llama_batch_init(n_batch, 0, n_seq_max)
        self._samplers: dict[int, ctypes.c_void_p] = {}
        self._greedy: dict[int, bool] = {}  # seq -> its chain is greedy alone (argmax will do)
        self._constraints: dict[int, Constraint] = {}  # slot -> its grammar, if any
        self._candidates = Candidates(self.n_vocab)
        self.grammars = Grammars(self._vocab)
        self._pieces: dict[int, bytes] = {}
        self._add_bos = bool(L.llama_vocab_get_add_bos(self._vocab))
        self.info = self._read_info(path)

    @property
    def kv_bytes(self) -> int:
        """The KV cache's size: a key and a value (16-bit, llama.cpp's default) per layer,
        KV head and cell, for every cell of every slot."""
        model = self._model
        per_head = L.llama_model_n_embd(model) // L.llama_model_n_head(model)
        width = per_head * L.llama_model_n_head_kv(model)
        return 2 * L.llama_model_n_layer(model) * width * KV_BYTES * L.llama_n_ctx(self._ctx)

    # -- loading -----------------------------------------------------------------------
    def _load_model(self, path: str):
        params = L.llama_model_default_params()
        model = L.llama_model_load_from_file(path.encode(), params)
        if not model:
            raise EngineError(f"llama.cpp could not load {path}: is it a GGUF model file?")
        return model

    def _new_context(
        self, n_ctx: int, n_threads: int, n_seq_max: int, n_batch: int, kv_unified: bool
    ):
        params = L.llama_context_default_params()
        params.n_ctx = n_ctx if kv_unified else n_ctx * n_seq_max
        params.kv_unified = kv_unified
        params.n_batch = n_batch
        params.n_ubatch = min(n_batch, UBATCH)
        params.n_seq_max = n_seq_max
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.no_perf = True
        ctx = L.llama_init_from_model(self._model, params)
        if not ctx:
            raise EngineError(f"llama.cpp could not create a context of {n_ctx} tokens")
        return ctx

    def _read_info(self, path: str) -> ModelInfo:
        desc = ctypes.create_string_buffer(256)
        L.llama_model_desc(self._model, desc, 256)
        template = L.llama_model_chat_template(self._model, None)
        return ModelInfo(
            description=f"{Path(path).name} ({desc.value.decode(errors='replace')})",
            n_ctx=L.llama_n_ctx_seq(self._ctx),
            n_ctx_train=L.llama_model_n_ctx_train(self._model),
            chat_template=template.decode("utf-8") if template else None,
            bos_text=self._special_text(L.llama_vocab_bos(self._vocab)),
            eos_text=self._special_text(L.llama_vocab_eos(self._vocab)),
            special_texts=self._control_texts(),
            max_token_bytes=max(len(self._piece(t, special=True)) for t in range(self.n_vocab)),
        )

    def _control_texts(self) -> tuple[str, ...]:
        """The text of every control token: what `parse_special` would turn into one."""
        control = L.LLAMA_TOKEN_ATTR_CONTROL | L.LLAMA_TOKEN_ATTR_UNKNOWN
        texts = {
            self._special_text(token)
            for token in range(self.n_vocab)
            if L.llama_vocab_get_attr(self._vocab, token) & control
        }
        return tuple(sorted(t for t in texts if t))

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._piece(token, special=True).decode("utf-8", errors="replace")

    # -- tokenizer (read-only, any thread) ------------------------------------------------
    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = False
    ) -> list[int]:
        data = text.encode("utf-8")
        add_bos = add_special and self._add_bos and not text.startswith(self.info.bos_text)
        capacity = len(data) + 8
        buf = (L.llama_token * capacity)()
        n = L.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_bos, parse_special)
        if n < 0:
            raise EngineError("tokenizer overflow")
        return list(buf[:n])

    def token_bytes(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self._piece(token, special=False)
        return piece

    def _piece(self, token: int, *, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = L.llama_token_to_piece(self._vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self._vocab, token, buf, -n, 0, special)
        return buf.raw[:n]

    def is_eog(self, token: int) -> bool:
        return bool(L.llama_vocab_is_eog(self._vocab, token))

    # -- sequences (engine thread only) ---------------------------------------------------
    def begin(self, seq_id: int, sampling: SamplingParams, keep: int) -> None:
        self.end(seq_id)
        L.llama_memory_seq_rm(self._mem, seq_id, keep, -1)
        self._start_sampling(seq_id, sampling)

    def fork(self, src: int, dst: int, sampling: SamplingParams) -> None:
        self.end(dst)
        L.llama_memory_seq_rm(self._mem, dst, -1, -1)
        L.llama_memory_seq_cp(self._mem, src, dst, -1, -1)
        self._start_sampling(dst, sampling)

    def _start_sampling(self, seq_id: int, sampling: SamplingParams) -> None:
        if sampling.grammar is not None:
            grammar = sampling.grammar
            self._constraints[seq_id] = Constraint(
                lambda: self.grammars.new_sampler(grammar),
                sampling.grammar_triggers,
                lambda text: self.tokenize(text, add_special=False),
            )
        self._samplers[seq_id] = self._sampler_chain(sampling)
        self._greedy[seq_id] = sampling.greedy

    def end(self, seq_id: int) -> None:
        self._greedy.pop(seq_id, None)
        sampler = self._samplers.pop(seq_id, None)
        if sampler is not None:
            L.llama_sampler_free(sampler)
        constraint = self._constraints.pop(seq_id, None)
        if constraint is not None:
            constraint.free()

    def grammar_compiles(self, grammar: str) -> bool:
        return self.grammars.compile(grammar)

    def _sampler_chain(self, sampling: SamplingParams):
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if sampling.greedy and not (sampling.grammar and sampling.repeat_penalty != 1.0):
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
            return chain
        if sampling.repeat_penalty != 1.0:
            penalties = L.llama_sampler_init_penalties(
                self.n_vocab, 64, sampling.repeat_penalty, 0.0, 0.0
            )
            L.llama_sampler_chain_add(chain, penalties)
        if sampling.greedy:  # constrained: a grammar keeps a small model in loops otherwise
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
            return chain
        if sampling.top_k > 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(sampling.top_k))
        if sampling.top_p < 1.0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(sampling.top_p, 1))
        if sampling.min_p > 0.0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_min_p(sampling.min_p, 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(sampling.temperature))
        seed = sampling.seed % 2**32 if sampling.seed is not None else L.LLAMA_DEFAULT_SEED
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed))
        return chain

    def decode(self, batch: list[BatchEntry]) -> list[int]:
        b = self._batch
        n = 0
        logits_at: list[int] = []
        for entry in batch:
            first_output = len(entry.tokens) - entry.outputs if entry.want_logits else -1
            for i, token in enumerate(entry.tokens):
                b.token[n] = token
                b.pos[n] = entry.start_pos + i
                b.n_seq_id[n] = 1
                b.seq_id[n][0] = entry.seq_id
                b.logits[n] = 0 <= first_output <= i
                n += 1
            if entry.want_logits:
                logits_at.append(n - entry.outputs)
        b.n_tokens = n
        rc = L.llama_decode(self._ctx, b)
        if rc == 1:
            raise KVFullError("the KV cache has no room for this batch")
        if rc != 0:
            raise EngineError(f"llama_decode failed with status {rc}")
        return logits_at

    def truncate(self, seq_id: int, keep: int) -> None:
        if not L.llama_memory_seq_rm(self._mem, seq_id, keep, -1):
            raise EngineError(f"llama.cpp could not drop slot {seq_id}'s KV from {keep} on")

    def sample(self, seq_id: int, logits_index: int) -> int:
        """The sequence's next token from its sampler chain, under its grammar if it has one.

        Greedy without a grammar takes the argmax of the logits directly: the same token
        (the first of equal maxima, as llama.cpp's greedy sampler picks), without building
        the chain's candidate array over the whole vocabulary every token.
        """
        constraint = self._constraints.get(seq_id)
        if constraint is not None:
            logits = L.llama_get_logits_ith(self._ctx, logits_index)
            token = constraint.sample(self._samplers[seq_id], self._candidates, logits)
            if not self.is_eog(token):
                constraint.watch(self.token_bytes(token), self._candidates)
            return token
        if self._greedy.get(seq_id):
            return int(self._logits(logits_index).argmax())
        return int(L.llama_sampler_sample(self._samplers[seq_id], self._ctx, logits_index))

    def _logits(self, logits_index: int) -> np.ndarray:
        ptr = L.llama_get_logits_ith(self._ctx, logits_index)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def logprob(self, logits_index: int, token: int) -> float:
        logits = self._logits(logits_index).astype(np.float64)
        return float(logits[token]) - _log_z(logits)

    def top_logprobs(self, logits_index: int, k: int) -> list[tuple[int, float]]:
        logits = self._logits(logits_index).astype(np.float64)
        k = min(k, logits.size)
        best = np.argpartition(-logits, k - 1)[:k]
        best = best[np.argsort(-logits[best], kind="stable")]
        log_z = _log_z(logits)
        return [(int(t), float(logits[t]) - log_z) for t in best]

    def close(self) -> None:
        for seq_id in list(self._samplers) + list(self._constraints):
            self.end(seq_id)
        self.grammars.clear()
        if self._batch is not None:
            L.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            L.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            L.llama_model_free(self._model)
            self._model = None


def _log_z(logits: np.ndarray) -> float:
    """The log of the softmax's denominator, computed without overflow."""
    top = float(logits.max())
    return top + math.log(float(np.exp(logits - top).sum()))
