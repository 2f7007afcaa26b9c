#!/usr/bin/env bash
# Print the CMake flags that build ggml for this CPU.
#
# x86-64: GGML_NATIVE=OFF plus explicit instruction sets read from /proc/cpuinfo, never AMX
# (a native build segfaults in ggml's AMX kernels on some Xeons). Elsewhere: a native build.
# Used by install-engine.sh and by the benchmark's llama-server build, so both match.
set -euo pipefail

arch=$(uname -m)
if [[ "$arch" != x86_64 && "$arch" != amd64 ]]; then
  echo "-DGGML_NATIVE=ON"
  exit 0
fi
have=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
out="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx_vnni:AVX_VNNI \
            avx512f:AVX512 avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI \
            avx512_bf16:AVX512_BF16; do
  flag=${pair%%:*}; opt=${pair##*:}
  if [[ "$have" == *" $flag "* ]]; then out+=" -DGGML_${opt}=ON"; else out+=" -DGGML_${opt}=OFF"; fi
done
echo "$out"
