#!/usr/bin/env bash
# One-command GPU check for a host with an NVIDIA GPU and no internet (issue 15):
# brings paddle into its own venv from a wheel folder, checks CUDA is seen, then runs
# bench/gpu_check.py (predictor img/s at batch 1..128, FP32 and TensorRT FP16, for the
# shipped student and teacher; an inference worker fed by N cameras) and writes its
# section of bench/RESULTS.md. Under 5 minutes.
#
#   bench/gpu_check.sh --wheels /mnt/wheels                 # GPU host, offline
#   bench/gpu_check.sh --wheels /mnt/wheels -- --cameras 60 # options after -- go to gpu_check.py
#   bench/gpu_check.sh --cpu --python .venv/bin/python -- --quick   # CPU fallback, no install
#   bench/gpu_check.sh --fetch-wheels /mnt/wheels           # on a connected machine: fill it
#
# The wheel folder holds paddlepaddle-gpu for Python 3.12 (a CUDA 12.x build: a CUDA 13
# driver runs CUDA 12 binaries), setuptools, the project's dependencies, and optionally
# tensorrt-cu12 (for the TensorRT figures), paddlepaddle (CPU) + paddle2onnx +
# onnxruntime-gpu (the ONNX fallback, used when paddle-gpu cannot be installed or sees no
# GPU: paddle2onnx 2.x needs a paddle, any build, to convert).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export GPU_CHECK_COMMAND="bench/gpu_check.sh $*"
WHEELS="" VENV="$ROOT/.gpu-check/venv" PYTHON="" DEVICE="gpu" FETCH="" INTERPRETER="python3.12"
PADDLE_INDEX="${PADDLE_INDEX:-https://www.paddlepaddle.org.cn/packages/stable/cu126/}"  # CUDA 12.6 build
PADDLE_VERSION="${PADDLE_VERSION:-3.2.0}"
usage() { sed -n '2,16p' "$0"; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheels) WHEELS="$2"; shift 2 ;;
    --venv) VENV="$2"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    --interpreter) INTERPRETER="$2"; shift 2 ;;
    --cpu) DEVICE="cpu"; shift ;;
    --fetch-wheels) FETCH="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) echo "gpu_check.sh: unknown option $1" >&2; usage ;;
  esac
done
say() { echo "[gpu-check.sh $(date -u +%H:%M:%S)] $*"; }

fetch_wheels() {  # connected machine: everything the offline host needs, for cp312
  local dest="$1" deps
  mkdir -p "$dest"
  local target=(--python-version 3.12 --only-binary=:all: --platform manylinux2014_x86_64
                --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$dest")
  pip download "${target[@]}" "paddlepaddle-gpu==$PADDLE_VERSION" -i "$PADDLE_INDEX" \
    --extra-index-url https://pypi.org/simple
  deps="$(python3 -c 'import tomllib,sys; print("\n".join(tomllib.load(open(sys.argv[1],"rb"))["project"]["dependencies"]))' "$ROOT/pyproject.toml")"
  # shellcheck disable=SC2086
  pip download "${target[@]}" setuptools wheel paddlepaddle $(echo "$deps" | tr '\n' ' ')
  pip download "${target[@]}" tensorrt-cu12 paddle2onnx onnxruntime-gpu || \
    say "optional wheels (TensorRT, ONNX fallback) not all fetched"
  say "wheels for Python 3.12 in $dest"
}
if [[ -n "$FETCH" ]]; then fetch_wheels "$FETCH"; exit 0; fi

install_venv() {
  [[ -n "$WHEELS" && -d "$WHEELS" ]] || { echo "gpu_check.sh: --wheels DIR is required" >&2; exit 2; }
  command -v "$INTERPRETER" >/dev/null || { echo "gpu_check.sh: $INTERPRETER not found" >&2; exit 2; }
  local pip=("$VENV/bin/pip" install -q --no-index --find-links "$WHEELS")
  [[ -x "$VENV/bin/python" ]] || "$INTERPRETER" -m venv "$VENV"
  "${pip[@]}" setuptools wheel
  local paddle_wheel="paddlepaddle-gpu"
  [[ "$DEVICE" == "cpu" ]] && paddle_wheel="paddlepaddle"
  if ! "${pip[@]}" "$paddle_wheel"; then
    # paddle2onnx 2.x converts with paddle: the CPU build is enough for that.
    say "$paddle_wheel did not install from $WHEELS; CPU paddle for the ONNX fallback"
    "${pip[@]}" paddlepaddle || say "no paddle at all: the ONNX fallback cannot convert"
  fi
  "${pip[@]}" --no-build-isolation -e "$ROOT"
  "${pip[@]}" tensorrt-cu12 2>/dev/null || say "no TensorRT wheel: TensorRT figures may fail"
  "${pip[@]}" paddle2onnx onnxruntime-gpu 2>/dev/null || say "no ONNX fallback wheels"
  PYTHON="$VENV/bin/python"
}

START=$(date +%s)
if [[ -z "$PYTHON" ]]; then say "venv $VENV from $WHEELS"; install_venv; fi
# TensorRT's pip wheel keeps its libraries in site-packages/tensorrt_libs.
TRT_LIBS="$("$PYTHON" -c 'import importlib.util as u, os; s = u.find_spec("tensorrt_libs"); print(os.path.dirname(s.origin) if s and s.origin else "")' 2>/dev/null || true)"
[[ -n "$TRT_LIBS" ]] && export LD_LIBRARY_PATH="$TRT_LIBS:${LD_LIBRARY_PATH:-}"
if [[ "$DEVICE" == "gpu" ]]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || say "nvidia-smi failed"
  "$PYTHON" -c 'import paddle; print("paddle", paddle.__version__, "CUDA devices:", paddle.device.cuda.device_count())' \
    || say "paddle cannot see CUDA here: gpu_check.py reports why and falls back to ONNX"
fi
say "install took $(( $(date +%s) - START )) s"
cd "$ROOT"
timeout "${GPU_CHECK_TIMEOUT_S:-270}" "$PYTHON" bench/gpu_check.py --device "$DEVICE" "$@"
say "done in $(( $(date +%s) - START )) s"
