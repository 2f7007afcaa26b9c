"""Embedders: the embedded GGUF in llama.cpp's embedding mode (real, one thread) and an
OpenAI-compatible `/embeddings` over real HTTP to a small service started here; and the
settings that choose them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from inkstand.config import ConfigError, find_embedded_model, load_settings
from inkstand.knowledge.embedding import (
    UPSTREAM_BATCH,
    EmbeddingError,
    FifoLock,
    LlamaEmbedder,
    UpstreamEmbedder,
    open_embedder,
)

LIGHTHOUSE = "The lighthouse keeper lit the lamp at dusk."
PARAPHRASE = "A keeper lights the lighthouse lamp in the evening."
UNRELATED = "Bees make honey from the nectar of flowers."


@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaEmbedder]:
    embedder = LlamaEmbedder(find_embedded_model())
    yield embedder
    embedder.close()


def test_the_embedded_model_gives_one_unit_vector_per_text(llama):
    vectors = llama.embed([LIGHTHOUSE, PARAPHRASE, UNRELATED])
    assert llama.dimensions == 576  # SmolLM2-135M's embedding width
    assert vectors.shape == (3, llama.dimensions) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert llama.embed([]).shape == (0, llama.dimensions)
    assert llama.name.startswith("gguf:SmolLM2") and llama.name.endswith(".gguf:98362432")


def test_the_embedded_model_is_deterministic_alone_or_in_a_batch(llama):
    alone = llama.embed([LIGHTHOUSE])[0]
    again = llama.embed([LIGHTHOUSE])[0]
    batched = llama.embed([UNRELATED, LIGHTHOUSE, PARAPHRASE])[1]
    assert float(alone @ again) == pytest.approx(1, abs=1e-5)
    assert float(alone @ batched) == pytest.approx(1, abs=1e-4)


def test_a_paraphrase_is_nearer_than_an_unrelated_text(llama):
    lighthouse, paraphrase, unrelated = llama.embed([LIGHTHOUSE, PARAPHRASE, UNRELATED])
    assert float(lighthouse @ paraphrase) > float(lighthouse @ unrelated)


def test_a_text_longer_than_the_context_is_cut_not_refused(llama):
    (vector,) = llama.embed(["lighthouse " * 3000])
    assert np.linalg.norm(vector) == pytest.approx(1, abs=1e-5)


def test_threads_share_the_context_safely(llama):
    texts = [LIGHTHOUSE, PARAPHRASE, UNRELATED, "The ferry leaves at seven."] * 2
    serial = [llama.embed([t])[0] for t in texts]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda t: llama.embed([t])[0], texts))
    for one, other in zip(serial, parallel, strict=True):
        assert float(one @ other) == pytest.approx(1, abs=1e-4)


def test_a_file_that_is_not_a_gguf_is_an_embedding_error(tmp_path):
    bogus = tmp_path / "not.gguf"
    bogus.write_bytes(b"not a model")
    with pytest.raises(EmbeddingError, match="not.gguf"):
        LlamaEmbedder(str(bogus))


def test_the_fifo_lock_serves_in_arrival_order():
    lock, served = FifoLock(), []
    lock.__enter__()
    threads = []
    for n in range(5):
        thread = threading.Thread(target=lambda n=n: _take(lock, served, n))
        thread.start()
        threads.append(thread)
        while lock._next != n + 2:  # the thread holds its ticket before the next one starts
            time.sleep(0.001)
    lock.__exit__()
    for thread in threads:
        thread.join()
    assert served == [0, 1, 2, 3, 4]


def _take(lock: FifoLock, served: list[int], n: int) -> None:
    with lock:
        served.append(n)


# -- upstream /v1/embeddings ------------------------------------------------------------------


class EmbeddingService:
    """A tiny OpenAI-style embeddings endpoint: vector i of a text is (len, count of 'a', i),
    answered in reverse index order; `status` and `body` force failures."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict, str | None]] = []
        self.status = 200
        self.body: bytes | None = None
        self.width = 3
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers["Content-Length"])
                request = json.loads(self.rfile.read(length))
                service.requests.append((request, self.headers.get("Authorization")))
                body = service.body or json.dumps(service.answer(request)).encode()
                self.send_response(service.status if self.path == "/v1/embeddings" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, request: dict) -> dict:
        data = [
            {"object": "embedding", "index": i, "embedding": self.vector(text, i)}
            for i, text in enumerate(request["input"])
        ]
        return {"object": "list", "model": request["model"], "data": data[::-1]}

    def vector(self, text: str, index: int) -> list[float]:
        return [float(len(text)), float(text.count("a")), float(index)][: self.width] + [0.0] * (
            self.width - 3
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service() -> Iterator[EmbeddingService]:
    running = EmbeddingService()
    yield running
    running.close()


def test_an_upstream_engine_embeds_in_order_normalised_and_in_batches(service):
    embedder = UpstreamEmbedder(service.url + "/", "nomic-embed", "s3cret")
    texts = [f"text {'a' * n}" for n in range(UPSTREAM_BATCH + 3)]
    vectors = embedder.embed(texts)
    assert vectors.shape == (len(texts), 3) and embedder.dimensions == 3
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)
    expected = np.array([service.vector(t, i % UPSTREAM_BATCH) for i, t in enumerate(texts)])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(vectors, expected, atol=1e-6)  # index order, not the answer's order
    assert [len(r["input"]) for r, _ in service.requests] == [UPSTREAM_BATCH, 3]
    assert {(r["model"], auth) for r, auth in service.requests} == {
        ("nomic-embed", "Bearer s3cret")
    }
    assert embedder.name == "openai:nomic-embed"
    embedder.close()


@pytest.mark.parametrize(
    ("status", "body", "match"),
    [
        (500, b'{"error": "out of memory"}', "answered 500"),
        (200, b"<html>not json</html>", "not embeddings"),
        (200, b'{"data": [{"index": 0}]}', "not embeddings"),
        (200, b'{"data": []}', "0 vectors"),
    ],
)
def test_an_upstream_failure_is_an_embedding_error_saying_why(service, status, body, match):
    service.status, service.body = status, body
    embedder = UpstreamEmbedder(service.url, "m")
    with pytest.raises(EmbeddingError, match=match) as caught:
        embedder.embed(["hello"])
    assert service.url in str(caught.value)
    embedder.close()


def test_an_unreachable_upstream_is_an_embedding_error(service):
    url = service.url
    service.close()
    embedder = UpstreamEmbedder(url, "m")
    with pytest.raises(EmbeddingError, match="could not be reached"):
        embedder.embed(["hello"])
    embedder.close()


def test_vectors_of_another_length_later_are_refused(service):
    embedder = UpstreamEmbedder(service.url, "m")
    embedder.embed(["one"])
    service.width = 4
    with pytest.raises(EmbeddingError, match="4 numbers, earlier ones had 3"):
        embedder.embed(["two"])
    embedder.close()


# -- settings ---------------------------------------------------------------------------------


def test_semantic_search_is_off_by_default():
    settings = load_settings({}, environ={})
    assert (settings.embedding_model, settings.embedding_url) == ("", "")
    assert open_embedder(settings) is None


def test_embedded_names_the_shipped_model():
    settings = load_settings({}, environ={"INKSTAND_EMBEDDING_MODEL": "embedded"})
    embedder = open_embedder(settings)
    assert isinstance(embedder, LlamaEmbedder) and embedder.path == find_embedded_model()
    embedder.close()


def test_an_upstream_embedding_engine_is_configured_by_url(service, monkeypatch):
    monkeypatch.setenv("EMBED_KEY", "k")
    flags = {
        "embedding_url": service.url,
        "embedding_upstream_model": "bge",
        "embedding_api_key_env": "EMBED_KEY",
    }
    embedder = open_embedder(load_settings(flags, environ={}))
    assert isinstance(embedder, UpstreamEmbedder)
    embedder.embed(["x"])
    assert service.requests[0][1] == "Bearer k"
    embedder.close()


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (
            {"embedding_model": "embedded", "embedding_url": "http://e:8000/v1"},
            "`embedding_model` and `embedding_url`",
        ),
        ({"embedding_model": "/no/such.gguf"}, "/no/such.gguf"),
        ({"embedding_url": "http://e:8000/v1"}, "embedding_upstream_model"),
        ({"embedding_url": "e:8000", "embedding_upstream_model": "m"}, "not an http(s) URL"),
        ({"embedding_upstream_model": "m"}, "`embedding_url`, which is not set"),
    ],
)
def test_bad_embedding_settings_are_refused_naming_them(flags, named):
    with pytest.raises(ConfigError) as caught:
        load_settings(flags, environ={})
    assert named in caught.value.description


def test_embedding_flags_are_on_the_command_line():
    from inkstand.cli import _parser

    args = _parser().parse_args(
        ["serve", "--embedding-url", "http://e/v1", "--embedding-upstream-model", "m"]
        + ["--embedding-api-key-env", "K", "--embedding-model", "embedded"]
    )
    assert (args.embedding_url, args.embedding_upstream_model) == ("http://e/v1", "m")
    assert (args.embedding_api_key_env, args.embedding_model) == ("K", "embedded")
