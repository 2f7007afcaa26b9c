#!/usr/bin/env bash
# Build (once per CPU feature set) and install llama-cpp-python into the given venv.
#
# Why a script: llama-cpp-python ships no wheels, and a default GGML_NATIVE build segfaults
# inside ggml's AMX kernels on some Xeons. We always build with GGML_NATIVE=OFF and explicit
# instruction-set flags read from /proc/cpuinfo (never AMX), cache the wheel under a key made
# of the version and those flags (so a wheel built with other flags is never reused), and
# smoke-test the installed build on the embedded model; a build that crashes is thrown away
# and rebuilt with the conservative AVX2 set.
set -euo pipefail

VENV=${1:?usage: install-engine.sh VENV}
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
PY="$VENV/bin/python"
CACHE=${INKSTAND_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/inkstand/wheels}
HERE=$(cd "$(dirname "$0")" && pwd)

cpu_flags() {
  bash "$HERE/cpu-flags.sh"
}

conservative_flags() {
  echo "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
}

build_wheel() {
  # build_wheel FLAGS -> prints the wheel path, building it only if the keyed cache lacks it.
  local flags="$1 -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"
  local key; key=$(printf '%s %s %s' "$VERSION" "$flags" "$("$PY" -c 'import sys;print(sys.version_info[:2])')" | sha256sum | cut -c1-16)
  local dir="$CACHE/llama_cpp_python-$VERSION-$key"
  if ! ls "$dir"/*.whl >/dev/null 2>&1; then
    echo "install-engine: building llama-cpp-python $VERSION ($flags); this takes a few minutes" >&2
    mkdir -p "$dir.tmp"
    CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
      "$PY" -m pip wheel --no-cache-dir --no-deps --no-binary llama-cpp-python \
      -w "$dir.tmp" "llama-cpp-python==$VERSION" >&2
    rm -rf "$dir"; mv "$dir.tmp" "$dir"
  fi
  ls "$dir"/*.whl
}

install_wheel() {
  "$PY" -m pip install --no-cache-dir --force-reinstall --no-deps "$1" >&2
  "$PY" -m pip install "numpy>=1.20" "typing-extensions>=4.5" "diskcache>=5.6.1" "jinja2>=2.11.3" >&2
}

smoke_test() {
  "$PY" "$HERE/smoke_engine.py"
}

wheel=$(build_wheel "$(cpu_flags)")
install_wheel "$wheel"
if ! smoke_test; then
  echo "install-engine: the build for this CPU failed its smoke test; rebuilding with AVX2 only" >&2
  rm -rf "$(dirname "$wheel")"
  wheel=$(build_wheel "$(conservative_flags)")
  install_wheel "$wheel"
  smoke_test
fi
echo "install-engine: llama-cpp-python $VERSION ready ($wheel)" >&2
