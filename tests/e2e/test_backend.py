"""The llama.cpp backend on the embedded model, in the test process: greedy's argmax path."""

from __future__ import annotations

import llama_cpp as L
import pytest

from inkstand.backends.base import BatchEntry, SamplingParams
from inkstand.backends.llama_cpp import LlamaCppBackend
from inkstand.config import find_embedded_model


@pytest.fixture(scope="module")
def backend():
    loaded = LlamaCppBackend(find_embedded_model(), n_ctx=256, n_threads=1, n_seq_max=2)
    yield loaded
    loaded.close()


def test_greedy_argmax_picks_what_llama_cpp_greedy_sampler_picks(backend):
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
    prompt = backend.tokenize("<|im_start|>user\nName three rivers.<|im_end|>\n")
    backend.begin(0, SamplingParams(temperature=0.0), 0)
    try:
        (index,) = backend.decode([BatchEntry(0, prompt, 0, True)])
        for step in range(24):
            ours = backend.sample(0, index)
            assert ours == L.llama_sampler_sample(chain, backend._ctx, index)
            (index,) = backend.decode([BatchEntry(0, (ours,), len(prompt) + step, True)])
    finally:
        backend.end(0)
        L.llama_sampler_free(chain)
