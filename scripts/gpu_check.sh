#!/usr/bin/env bash
# The CUDA int8 numbers on a GPU machine that has no TVM: build the bundle here, run it there.
#
#   scripts/gpu_check.sh prepare     # here (nvcc, no GPU): bundle + runtime-only TVM + tvm-ffi wheel,
#                                    # packed into .gpu_check/payload.tar.xz, sizes checked
#   scripts/gpu_check.sh device      # on the GPU machine, from the repository root (Python 3.12, numpy,
#                                    # torch; no TVM, no network): unpack, check, time; files into $OUT
#   scripts/gpu_check.sh collect DIR # here: DIR holds what came back; records -> docs/results/, table
#
# With the project's device tool, `device` is one call:
#   run(command="bash scripts/gpu_check.sh device", carry=[".gpu_check/payload.tar.xz"], timeout_s=480)
#
# Settings (environment, for `prepare`): MODELS (default resnet50_v1,resnet18_v1), BATCHES (1,16),
# ARCH (sm_90: H100 / H200), SUITE (configs/suites/tvm_cuda_int8.yaml: its quantize and bench settings),
# PYTHON (the build host's Python with TVM; default: .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=.gpu_check
PAYLOAD=$WORK/payload.tar.xz
TVM_FFI_WHEEL_VERSION=0.1.14.post1  # the pin of requirements.txt (0.1.15 segfaults in save_json)
LIMIT_MIB=60                        # the payload (uncompressed) and everything that travels (device limit: 64)

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
bytes_of() { du -sb "$@" | awk '{ s += $1 } END { print s + 0 }'; }

prepare() {
    local py=${PYTHON:-}
    if [ -z "$py" ]; then
        if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
    fi
    local models=${MODELS:-resnet50_v1,resnet18_v1} batches=${BATCHES:-1,16} arch=${ARCH:-sm_90}
    local suite=${SUITE:-configs/suites/tvm_cuda_int8.yaml}
    # the work folder never travels except as the carried payload
    local exclude
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qx "/$WORK/" "$exclude" 2>/dev/null || echo "/$WORK/" >>"$exclude"
    rm -rf "$WORK"
    mkdir -p "$WORK/stage" "$WORK/wheels"

    "$py" -m harness bundle "$suite" --target cuda --arch "$arch" --models "$models" --batches "$batches" \
        --out "$WORK/stage/bundle"
    "$py" -m harness.bundle.runtime "$WORK/stage/runtime"
    "$py" -m pip download --quiet "apache-tvm-ffi==$TVM_FFI_WHEEL_VERSION" --python-version 3.12 \
        --only-binary=:all: --no-deps --platform manylinux_2_28_x86_64 -d "$WORK/stage/wheels"

    local b r w total
    b=$(bytes_of "$WORK/stage/bundle"); r=$(bytes_of "$WORK/stage/runtime"); w=$(bytes_of "$WORK/stage/wheels")
    total=$((b + r + w))
    echo "payload: bundle $(mib "$b") MiB + runtime-only TVM $(mib "$r") MiB + tvm-ffi wheel $(mib "$w") MiB" \
         "= $(mib "$total") MiB (limit $LIMIT_MIB MiB)"
    if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
        echo "error: the payload is over $LIMIT_MIB MiB: fewer MODELS or BATCHES" >&2
        exit 2
    fi
    tar -cJf "$PAYLOAD" -C "$WORK/stage" bundle runtime wheels
    # what the device tool sends: tracked and untracked-not-ignored files, plus the carried payload
    local tree carried
    tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
    carried=$(bytes_of "$PAYLOAD")
    echo "travels: working tree $(mib "$tree") MiB + payload.tar.xz $(mib "$carried") MiB" \
         "= $(mib $((tree + carried))) MiB (limit $LIMIT_MIB MiB)"
    if [ $((tree + carried)) -gt $((LIMIT_MIB * 1048576)) ]; then
        echo "error: what travels is over $LIMIT_MIB MiB: fewer MODELS or BATCHES" >&2
        exit 2
    fi
    echo "ready: run(command=\"bash scripts/gpu_check.sh device\", carry=[\"$PAYLOAD\"], timeout_s=480)"
}

device() {
    : "${OUT:?OUT: the folder whose files come back}"
    local w=/tmp/gpu_check
    rm -rf "$w" && mkdir -p "$w/site"
    python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='data')" "$PAYLOAD" "$w"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$w/site" "$w"/wheels/*.whl
    # TVM's CUDA runtime (lib/libtvm_runtime_cuda.so) links libcudart.so.13: the CUDA toolkit's or torch's
    local cudart
    cudart=$(find /usr/local/cuda*/lib* /usr/local/cuda*/targets /opt/torch /usr/lib/x86_64-linux-gnu \
             -name 'libcudart.so.13*' 2>/dev/null | head -1 || true)
    export LD_LIBRARY_PATH="${cudart:+$(dirname "$cudart"):}${LD_LIBRARY_PATH:-}"
    export TVM_USE_RUNTIME_LIB=1 PYTHONUNBUFFERED=1
    export PYTHONPATH="$w/runtime:$w/site:$PWD"
    {
        nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv || true
        python3 -c "import sys, numpy, torch; print(sys.version.split()[0], 'numpy', numpy.__version__, 'torch', torch.__version__)" || true
        echo "libcudart: ${cudart:-not found}"
    } 2>&1 | tee "$OUT/machine.txt"
    local rc=0
    python3 -m harness bench-bundle "$w/bundle" --out "$w/results" 2>&1 | tee "$OUT/bench.log" || rc=$?
    if [ -d "$w/results" ]; then
        tar -czf "$OUT/results.tar.gz" -C "$w" results
    fi
    echo "bench-bundle exit status $rc" | tee -a "$OUT/bench.log"
    return "$rc"
}

collect() {
    local back=${1:?collect DIR: the folder that holds the files of the device run}
    local py=${PYTHON:-}
    if [ -z "$py" ]; then
        if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
    fi
    local dest
    dest="docs/results/$(date -u +%F)-cuda-bundle"
    mkdir -p "$dest"
    tar -xzf "$back/results.tar.gz" -C "$dest" --strip-components=1
    cp "$back/machine.txt" "$back/bench.log" "$dest/" 2>/dev/null || true
    "$py" -m harness report "$dest" --output "$dest/table.md"
    "$py" -m harness report "$dest"
}

case "${1:-}" in
    prepare) prepare ;;
    device) device ;;
    collect) shift; collect "$@" ;;
    *) echo "usage: scripts/gpu_check.sh prepare | device | collect DIR" >&2; exit 2 ;;
esac
