"""llama.cpp's `llama-server`, built from the source llama-cpp-python vendors.

    .venv/bin/python scripts/llama_server.py     # build (or find) it and print its path

Two users: the benchmarks (bench/concurrency.py runs it as the C++ peer) and the tests
(tests/support/llama_servers.py starts replicas of it as OpenAI-speaking upstream engines).
`make test` runs this script first, so only the first run on a machine pays for the build.

`ensure_llama_server()` downloads the llama-cpp-python sdist of the installed version from
PyPI (`pip download --no-binary :all:`), configures its `vendor/llama.cpp` with the CPU
flags Inkstand's engine was built with (scripts/cpu-flags.sh) plus BUILD_FLAGS, Release,
and builds only the `llama-server` target. The result is cached outside the repository,
under the root scripts/install-engine.sh keeps its wheels in:

    ${XDG_CACHE_HOME:-~/.cache}/inkstand/llama-server-<version>-<key>/
        llama-server  llama_cpp_python-<version>.tar.gz  build.log  build.json

`key` is a hash of the version and the flags, so a change of either builds a new one;
build.json records them with the vendored llama.cpp commit and the build's duration. A
build runs in a temporary directory beside its cache entry and is renamed into place when
complete, so an interrupted build never looks finished; a lock file makes a second caller
wait for the first one's build rather than start its own. A build takes ~5 minutes on 2 cores.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
BINARY = "llama-server"
BUILD_FLAGS = ("-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_CURL=OFF",
               "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=ON",
               "-DBUILD_SHARED_LIBS=OFF")  # fmt: skip


def cache_root() -> Path:
    """Inkstand's cache folder: the one install-engine.sh keeps its wheels under."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "inkstand"


def cpu_flags() -> list[str]:
    out = subprocess.run(["bash", str(SCRIPTS / "cpu-flags.sh")], check=True, capture_output=True)
    return out.stdout.decode().split()


def build_config() -> dict:
    """The installed llama-cpp-python version, the CMake flags, and the cache entry they key."""
    version = importlib.metadata.version("llama_cpp_python")
    flags = [*cpu_flags(), *BUILD_FLAGS]
    key = hashlib.sha256(f"{version} {' '.join(flags)}".encode()).hexdigest()[:16]
    folder = cache_root() / f"llama-server-{version}-{key}"
    return {"version": version, "flags": flags, "dir": str(folder)}


def ensure_llama_server() -> tuple[Path, dict]:
    """The llama-server binary (built now if the cache lacks it) and how it was built."""
    config = build_config()
    out = Path(config["dir"])
    binary = out / BINARY
    if not binary.exists():
        with _locked(out.with_name(out.name + ".lock")):
            if not binary.exists():  # another process may have built it while we waited
                _build(config["version"], config["flags"], out)
    record = out / "build.json"
    built = json.loads(record.read_text()) if record.exists() else {}
    return binary, built | config


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build(version: str, flags: list[str], out: Path) -> None:
    print(f"building llama-server {version} into {out} (first run only, minutes)", file=sys.stderr)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=out.name + ".tmp-", dir=out.parent) as tmp:
        work = Path(tmp)
        sdist = _download_sdist(version, work)
        with tarfile.open(sdist) as tar:
            tar.extractall(work, filter="data")
        (source,) = work.glob("llama_cpp_python-*/vendor/llama.cpp")
        build = work / "build"
        log_path = work / "build.log"
        jobs = str(os.cpu_count() or 2)
        _run_logged(
            [
                ["cmake", "-S", str(source), "-B", str(build), "-G", "Ninja", *flags],
                ["cmake", "--build", str(build), "--target", BINARY, "-j", jobs],
            ],
            log_path,
        )
        staged = work / "out"
        staged.mkdir()
        shutil.copy2(build / "bin" / BINARY, staged / BINARY)
        shutil.copy2(sdist, staged / sdist.name)
        shutil.copy2(log_path, staged / "build.log")
        seconds = round(time.monotonic() - started, 1)
        record = {"version": version, "llama_cpp_commit": _vendored_commit(work),
                  "build_seconds": seconds}  # fmt: skip
        (staged / "build.json").write_text(json.dumps(record, indent=2) + "\n")
        shutil.rmtree(out, ignore_errors=True)  # an entry whose binary went missing
        staged.rename(out)
    print(f"built llama-server in {seconds:.0f} s", file=sys.stderr)


def _download_sdist(version: str, into: Path) -> Path:
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "--no-deps", "--no-binary", ":all:", f"llama-cpp-python=={version}",
         "-d", str(into)],
        check=True,
    )  # fmt: skip
    (sdist,) = into.glob("llama_cpp_python-*.tar.gz")
    return sdist


def _run_logged(steps: list[list[str]], log_path: Path) -> None:
    with log_path.open("wb") as log:
        for step in steps:
            if subprocess.run(step, stdout=log, stderr=subprocess.STDOUT).returncode:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{' '.join(step[:2])} failed:\n{tail}")


def _vendored_commit(work: Path) -> str | None:
    """The llama.cpp commit the sdist vendors: its git submodule's HEAD, if the sdist kept it."""
    heads = list(work.glob("llama_cpp_python-*/.git/modules/vendor/llama.cpp/HEAD"))
    return heads[0].read_text().strip() if heads else None


def llama_server_command(
    binary: Path, model_path: str, port: int, *, threads: int, ctx_size: int, slots: int
) -> list[str]:
    """llama-server as a user would start it for `slots` parallel chats.

    `-c` is the whole KV cache, split evenly among the `-np` slots (the KV is not unified
    when -np is given), so `ctx_size * slots` gives each slot Inkstand's per-sequence
    context. Everything else is left at llama-server's defaults: continuous batching,
    prompt caching with slot selection by prompt similarity, the 8 GiB host-memory prompt
    cache (`--cache-ram`), flash attention `auto`, batch 2048 / ubatch 512.
    """
    return [
        str(binary),
        "-m", model_path,
        "--host", "127.0.0.1",
        "--port", str(port),
        "-np", str(slots),
        "-c", str(ctx_size * slots),
        "-t", str(threads),
        "-tb", str(threads),
    ]  # fmt: skip


if __name__ == "__main__":
    print(ensure_llama_server()[0])
