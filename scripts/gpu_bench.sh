#!/usr/bin/env bash
# Every GPU figure of avparse in one run, within a few minutes (see tools/harness/bench_gpu.py):
# checks (fp16 vs fp32 features, HAN on the GPU vs the CPU, the pipeline on the GPU),
# extractors per profile and backend (eager, compile, tensorrt when torch_tensorrt imports)
# in fp16 at batch 1..256, HAN per batch of windows, snippets/s, per-batch latency, the
# real-time streams estimate, and the live runtime end to end on the GPU.
#
#   scripts/gpu_bench.sh [--out FILE.json] [--budget SECONDS] [options]   on the GPU machine
#   scripts/gpu_bench.sh --dry-run                                        anywhere (CPU, small sizes)
#
# Needs python with torch (>= 2.11; torch-tensorrt optional), torchvision and numpy; pyzmq
# for the live run. Uses .venv/bin/python when there is one, else $PYTHON or python3. When
# avparse is not installed it imports the working tree through a throw-away link folder
# (no install, no network). Without --dry-run a missing GPU is an error (exit 3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import avparse.tools.harness.bench_gpu" 2>/dev/null; then
    SHIM=$(mktemp -d)
    trap 'rm -rf "$SHIM"' EXIT
    mkdir -p "$SHIM/avparse"
    for d in core stream train tools; do ln -s "$PWD/$d" "$SHIM/avparse/$d"; done
    export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
fi
ARGS=("$@")
case " $* " in
    *" --dry-run "*) ;;
    *) ARGS+=(--require-cuda) ;;
esac
"$PY" -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec "$PY" -m avparse.tools.harness.bench_gpu "${ARGS[@]}"
