#!/usr/bin/env bash
# The whole GPU check of a session that is lent a device machine, in one call of the device
# tool (`run` with command "bash scripts/gpu_check.sh" and timeout_s 600): build the extension
# with its CUDA sources against the machine's CUDA build of torch, run the cuda-marked tests,
# then the benchmarks (their GPU rows: sv_conv, pc_conv, grnn, the NAF block and NAFNet,
# deblur). Everything lands under $OUT: log.txt (every step's output, with the step's exit
# status) and the benchmark JSON files named after the GPU, to commit under bench/results/.
# Each step has its own time limit so that a hang in one still returns the others' results;
# together they stay under the device tool's 10 minutes a call. Needs nothing from outside the
# image (torch, triton, pytest, typer, rich, safetensors, scikit-image are in it). Written
# without a GPU: the first session that runs it should read log.txt before trusting it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/fastdeblur-gpu-check}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
PY=${PYTHON:-python3}

step() {  # step NAME SECONDS COMMAND...
  local name=$1 seconds=$2
  shift 2
  echo "== $name (limit ${seconds}s): $*" >>"$LOG"
  local t0=$SECONDS
  timeout "$seconds" "$@" >>"$LOG" 2>&1
  echo "== $name: exit $? after $((SECONDS - t0))s" >>"$LOG"
}

step device 60 "$PY" -c "import torch; print(torch.__version__, torch.version.cuda, \
torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).multi_processor_count)"
step nvidia-smi 30 nvidia-smi
step build 240 "$PY" setup.py build_ext --inplace
step extension 60 "$PY" -c "from fastdeblur import _ext; print('native', _ext.has_native(), \
'cuda', _ext.has_native_cuda())"
step cuda-tests 150 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests
step bench 300 "$PY" -m bench --only sv_conv pc_conv grnn naf deblur --out "$OUT"
ls -l "$OUT" >>"$LOG"
