"""The C++ peer: llama.cpp's `llama-server`, built from the source llama-cpp-python vendors.

    python bench/llama_server.py        # build (or find) it and print its path

`ensure_llama_server()` downloads the llama-cpp-python sdist of the installed version from
PyPI (`pip download --no-binary :all:`), configures its `vendor/llama.cpp` with the CPU
flags Inkstand's engine was built with (scripts/cpu-flags.sh) plus
`-DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF`, Release, and builds only the `llama-server`
target. The result is cached under bench/.peers/llama-server-<version>-<key>/ (gitignored),
`key` being a hash of the version and the flags, so a change of either builds a new one.
A build takes several minutes on 2 cores; later runs reuse it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEERS = HERE / ".peers"
BUILD_FLAGS = ("-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_CURL=OFF",
               "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=ON",
               "-DBUILD_SHARED_LIBS=OFF")  # fmt: skip


def cpu_flags() -> list[str]:
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "cpu-flags.sh")], check=True, capture_output=True
    )
    return out.stdout.decode().split()


def build_config() -> dict:
    version = importlib.metadata.version("llama_cpp_python")
    flags = [*cpu_flags(), *BUILD_FLAGS]
    key = hashlib.sha256(f"{version} {' '.join(flags)}".encode()).hexdigest()[:16]
    return {"version": version, "flags": flags, "dir": str(PEERS / f"llama-server-{version}-{key}")}


def ensure_llama_server() -> tuple[Path, dict]:
    """The llama-server binary (built now if the cache lacks it) and how it was built."""
    config = build_config()
    out = Path(config["dir"])
    binary = out / "llama-server"
    if not binary.exists():
        _build(config["version"], config["flags"], out)
    return binary, config


def _build(version: str, flags: list[str], out: Path) -> None:
    print(f"building llama-server {version} into {out} (first run only, minutes)", file=sys.stderr)
    PEERS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llama-server-", dir=PEERS) as tmp:
        work = Path(tmp)
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
        subprocess.run(
            [*pip, "--no-deps", "--no-binary", ":all:", f"llama-cpp-python=={version}",
             "-d", str(work)],
            check=True,
        )  # fmt: skip
        (sdist,) = work.glob("llama_cpp_python-*.tar.gz")
        with tarfile.open(sdist) as tar:
            tar.extractall(work, filter="data")
        (source,) = work.glob("llama_cpp_python-*/vendor/llama.cpp")
        build = work / "build"
        with (work / "build.log").open("wb") as log:
            for step in (
                ["cmake", "-S", str(source), "-B", str(build), "-G", "Ninja", *flags],
                ["cmake", "--build", str(build), "--target", "llama-server", "-j", "2"],
            ):
                if subprocess.run(step, stdout=log, stderr=subprocess.STDOUT).returncode:
                    tail = (work / "build.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{' '.join(step[:2])} failed:\n{tail}")
        staged = work / "out"
        staged.mkdir()
        shutil.copy2(build / "bin" / "llama-server", staged / "llama-server")
        shutil.copy2(sdist, staged / sdist.name)
        shutil.copy2(work / "build.log", staged / "build.log")
        shutil.rmtree(out, ignore_errors=True)
        staged.rename(out)


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
    binary, config = ensure_llama_server()
    print(binary)
