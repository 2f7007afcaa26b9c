"""The peer: llama-cpp-python's own server, on the very build Inkstand embeds.

`ensure_llama_cpp_venv()` creates bench/.peers/llama-cpp-python-venv (gitignored) once and
reuses it while the wheel is unchanged: it installs, with `--no-deps`, the cached wheel that
.venv's llama-cpp-python was installed from (pip's `direct_url.json` names it; failing that,
the newest ~/.cache/inkstand/wheels/llama_cpp_python-<version>-*/), then the wheel's own
base and `server` extra requirements from PyPI. `same_build()` then checks that both venvs
load byte-identical libllama/libggml shared objects.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

HERE = Path(__file__).resolve().parent
PEER_VENV = HERE / ".peers" / "llama-cpp-python-venv"
WHEEL_CACHE = Path.home() / ".cache" / "inkstand" / "wheels"
DIST = "llama_cpp_python"
NATIVE_LIBS = ("libllama.so", "libggml.so", "libggml-base.so", "libggml-cpu.so")


def installed_wheel() -> Path:
    """The wheel file .venv's llama-cpp-python came from."""
    dist = importlib.metadata.distribution(DIST)
    direct = dist.read_text("direct_url.json")
    if direct:
        url = urlparse(json.loads(direct).get("url", ""))
        path = Path(unquote(url.path))
        if url.scheme == "file" and path.is_file():
            return path
    dirs = sorted(WHEEL_CACHE.glob(f"{DIST}-{dist.version}-*/"), key=lambda d: d.stat().st_mtime)
    wheels = [w for d in reversed(dirs) for w in d.glob("*.whl")]
    if not wheels:
        raise RuntimeError(f"no cached {DIST} {dist.version} wheel under {WHEEL_CACHE}")
    return wheels[0]


def server_requirements() -> list[str]:
    """The wheel's own requirements: the base ones plus the `server` extra's."""
    wanted = []
    for req in importlib.metadata.requires(DIST) or []:
        spec, _, marker = req.partition(";")
        if not marker.strip() or marker.replace("'", '"').strip() == 'extra == "server"':
            wanted.append(spec.strip())
    return wanted


def ensure_llama_cpp_venv() -> Path:
    """The peer venv's python, creating or refreshing the venv when the wheel changed."""
    wheel = installed_wheel()
    stamp = PEER_VENV / "inkstand-bench.json"
    want = {"wheel": str(wheel), "sha256": _sha256(wheel), "requirements": server_requirements()}
    python = PEER_VENV / "bin" / "python"
    if python.exists() and stamp.exists() and json.loads(stamp.read_text()) == want:
        return python
    print(f"setting up {PEER_VENV} from {wheel.name} (first run only)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", str(wheel)], check=True)
    subprocess.run([*pip, *want["requirements"]], check=True)
    stamp.write_text(json.dumps(want, indent=2))
    return python


def same_build(peer_python: Path) -> dict[str, str]:
    """sha256 of each native library, after checking both venvs hold identical copies."""
    ours, theirs = _lib_dir(Path(sys.executable)), _lib_dir(peer_python)
    digests = {}
    for name in NATIVE_LIBS:
        digests[name] = _sha256(ours / name)
        if _sha256(theirs / name) != digests[name]:
            raise RuntimeError(f"{name} differs between .venv and {PEER_VENV}: not the same build")
    return digests


def _lib_dir(python: Path) -> Path:
    """Where that interpreter's llama_cpp keeps its shared libraries (found without loading)."""
    code = (
        "import importlib.util as u; print(u.find_spec('llama_cpp').submodule_search_locations[0])"
    )
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip()) / "lib"


def llama_cpp_server_command(
    python: Path, model_path: str, port: int, *, threads: int, ctx_size: int
) -> list[str]:
    """llama_cpp.server configured like Inkstand's context where that changes the numbers.

    Threads: its default is cpu_count // 2 (and cpu_count for batches); Inkstand's is used
    for both. Flash attention: Inkstand keeps llama.cpp's default (auto, which is on for this
    CPU build), llama_cpp.server turns it off unless told; with it on, both produce the same
    greedy tokens. Everything else (logits_all, its prefix cache) stays at its defaults.
    """
    return [
        str(python),
        "-m",
        "llama_cpp.server",
        "--model", model_path,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", str(ctx_size),
        "--n_threads", str(threads),
        "--n_threads_batch", str(threads),
        "--flash_attn", "true",
    ]  # fmt: skip


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
