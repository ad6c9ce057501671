#!/usr/bin/env bash
# The GPU check: one command on a CUDA machine without internet access.
#
#   benchmarks/gpu/check.sh OUTDIR [--wheels DIR] [--budget SECONDS] [--no-cuda] [--no-install]
#
# From the repository root. It
#   1. installs rendergrad and the packages the GPU needs from wheels placed beforehand in
#      DIR (default .whl/, ignored by git; see "Wheels" below) into a private folder,
#   2. builds nvdiffrast's CUDA extension (torch's extension builder: nvcc + ninja),
#   3. runs the `gpu` tests (the nvdiffrast renderer against its CPU double, silhouette
#      gradients, batching; the toy renderer, OLAT and the estimators on CUDA tensors) and the
#      nvdiffrast CPU tests,
#   4. runs the nvdiffrast benchmark (--quick, 5 seeds, with a time limit) and its throughput part,
#   5. writes OUTDIR/gpu-check.md (device, versions, each step's result and time, failures with
#      the end of their logs, the benchmark's report) and the logs next to it.
# Every step has a time limit; the whole check stays under --budget seconds (default 450, i.e.
# under 8 minutes). A failed step is recorded and the check goes on; the exit status is 1 if any
# step failed.
#
# --no-cuda: a dry run on a machine without a GPU: no install (unless wheels are there), no build;
#   the gpu tests run (and skip, saying why) and the benchmark runs through the tests' CPU
#   stand-in for nvdiffrast with tiny budgets. It checks this script, not the GPU.
#
# Wheels (on a machine with internet, from the repository root; Python 3.12 on the GPU machine):
#   echo /.whl/ >> .git/info/exclude      # or rely on .gitignore, which lists .whl/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl \
#       diffrp-nvdiffrast==0.3.3.1 trimesh==5.2.0 cma==4.5.0
#   (pure-Python wheels; torch, numpy, pluggy, tqdm, matplotlib, scipy, pytest, pytest-timeout,
#   hypothesis, pillow and setuptools are expected on the GPU machine already.) For upstream
#   nvdiffrast instead of diffrp-nvdiffrast, build a wheel from its repository
#   (`pip wheel --no-deps --no-build-isolation -w .whl git+https://github.com/NVlabs/nvdiffrast`) on a
#   machine with the same torch and CUDA, and leave diffrp-nvdiffrast out.
set -uo pipefail

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; }
OUT=""; WHEELS=".whl"; BUDGET=450; CUDA=1; INSTALL=1
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --no-cuda) CUDA=0; shift ;;
    --no-install) INSTALL=0; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "check.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) if [ -z "$OUT" ]; then OUT="$1"; shift; else echo "check.sh: one OUTDIR only" >&2; exit 2; fi ;;
  esac
done
[ -n "$OUT" ] || { usage >&2; exit 2; }
cd "$(dirname "$0")/../.." || exit 2
ROOT=$(pwd)
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
LOGS="$OUT/logs"; mkdir -p "$LOGS"
PY=${PYTHON:-python3}
T0=$(date +%s)
STEPS=()      # "name|status|seconds"
FAILED=()
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( BUDGET - $(elapsed) )); }

# step NAME LIMIT_SECONDS CMD...: run with a time limit (capped by what is left), log, record.
step() {
  local name="$1" limit="$2"; shift 2
  local rest; rest=$(left)
  [ "$rest" -lt "$limit" ] && limit=$rest
  if [ "$limit" -le 5 ]; then
    STEPS+=("$name|not run (time budget spent)|0"); FAILED+=("$name"); return 1
  fi
  local t rc
  t=$(date +%s)
  echo "== $name (limit ${limit}s)" >&2
  timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  rc=$?
  local dt=$(( $(date +%s) - t )) status="ok"
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status="TIMED OUT after ${limit}s"; elif [ $rc -ne 0 ]; then status="FAILED (exit $rc)"; fi
  STEPS+=("$name|$status|$dt")
  [ "$status" = ok ] || FAILED+=("$name")
  echo "   $status in ${dt}s" >&2
  return $rc
}

# -- 1. install ------------------------------------------------------------------------------
SITE="$ROOT/.gpu-check-site"
if [ $INSTALL -eq 1 ] && { [ $CUDA -eq 1 ] || ls "$WHEELS"/*.whl >/dev/null 2>&1; }; then
  export SITE WHEELS PY ROOT
  step install 180 bash -c '
    set -e
    rm -rf "$SITE"; mkdir -p "$SITE"
    ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "no wheels in $WHEELS: see the Wheels note in benchmarks/gpu/check.sh"; exit 1; }
    ls "$WHEELS"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl
    # rendergrad itself, from this tree (setuptools from the machine; nothing is fetched)
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target "$SITE" "$ROOT"
    rm -rf "$ROOT/build"'
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi

# -- 2. environment --------------------------------------------------------------------------
ENV_MD="$OUT/environment.txt"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -srm)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
  command -v nvcc >/dev/null && nvcc --version 2>&1 | tail -n 2 | head -n 1 | sed 's/^/nvcc: /'
  command -v ninja >/dev/null && echo "ninja: $(ninja --version)"
  "$PY" - <<'EOF' 2>&1
import importlib.metadata as md, platform, sys
import torch
print(f"python: {platform.python_version()} ({sys.executable})")
print(f"torch: {torch.__version__}, CUDA {torch.version.cuda}, cuda available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"device: {torch.cuda.get_device_name(0)}, capability {torch.cuda.get_device_capability(0)}")
for name in ("rendergrad", "diffrp-nvdiffrast", "nvdiffrast", "trimesh", "cma", "numpy", "pluggy", "pytest"):
    try:
        print(f"{name}: {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}: not installed")
import rendergrad
print(f"rendergrad imported from: {rendergrad.__file__}")
EOF
} >"$ENV_MD" 2>&1

# -- 3. build nvdiffrast ---------------------------------------------------------------------
if [ $CUDA -eq 1 ]; then
  export TORCH_EXTENSIONS_DIR="$ROOT/.gpu-check-site/torch_extensions"
  # one architecture (this GPU's) instead of every one torch knows: minutes less of nvcc
  CAP=$("$PY" -c 'import torch; c=torch.cuda.get_device_capability(0); print(f"{c[0]}.{c[1]}")' 2>/dev/null || true)
  [ -n "$CAP" ] && export TORCH_CUDA_ARCH_LIST="$CAP"
  export MAX_JOBS=${MAX_JOBS:-$(nproc)}
  step build-nvdiffrast 240 "$PY" -c '
import time, torch
import nvdiffrast.torch as dr
t = time.time()
ctx = dr.RasterizeCudaContext(device="cuda")
pos = torch.tensor([[[-0.8, -0.8, 0, 1], [0.8, -0.8, 0, 1], [0, 0.8, 0, 1]]], device="cuda")
tri = torch.tensor([[0, 1, 2]], dtype=torch.int32, device="cuda")
rast, _ = dr.rasterize(ctx, pos, tri, resolution=[64, 64])
cov = float((rast[..., 3] > 0).float().mean())
print(f"nvdiffrast built and ran in {time.time() - t:.1f} s; triangle covers {cov:.3f} of the frame")
assert 0.2 < cov < 0.6
'
fi

# -- 4. tests --------------------------------------------------------------------------------
step gpu-tests 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs --timeout 120 \
  tests/test_nvdiffrast_gpu.py tests/test_cuda_paths.py
step cpu-tests 90 "$PY" -m pytest -q -p no:cacheprovider -x --timeout 60 tests/test_nvdiffrast.py

# -- 5. benchmark ----------------------------------------------------------------------------
BENCH="$OUT/benchmark"
if [ $CUDA -eq 1 ]; then
  # throughput runs first (about a minute), then the optimisation runs share what is left
  LIMIT=$(( $(left) - 15 )); TL=$(( LIMIT - 100 )); [ $TL -gt 200 ] && TL=200; [ $TL -lt 30 ] && TL=30
  step benchmark "$LIMIT" "$PY" -m benchmarks nvdiffrast -- --quick --seeds 5 --time-limit "$TL" --out "$BENCH"
else
  step benchmark 300 "$PY" -m benchmarks nvdiffrast -- --test-double --seeds 1 --tasks pose \
    --methods analytic,cma --time-limit 60 --out "$BENCH"
fi

# -- 6. report -------------------------------------------------------------------------------
REPORT="$OUT/gpu-check.md"
{
  echo "# GPU check"
  echo
  [ $CUDA -eq 1 ] || echo "**Dry run (--no-cuda): nothing here ran on a GPU.**" && echo
  echo "Total $(elapsed) s (budget ${BUDGET} s). Command: \`benchmarks/gpu/check.sh $OUT\`"
  echo
  echo "## Environment"
  echo
  echo '```'
  cat "$ENV_MD"
  echo '```'
  echo
  echo "## Steps"
  echo
  echo "| step | result | seconds |"
  echo "|---|---|---:|"
  for s in "${STEPS[@]}"; do IFS='|' read -r n st dt <<<"$s"; echo "| $n | $st | $dt |"; done
  echo
  for n in build-nvdiffrast gpu-tests cpu-tests; do
    [ -f "$LOGS/$n.log" ] || continue
    echo "### $n (end of log)"
    echo
    echo '```'
    tail -n 25 "$LOGS/$n.log"; echo
    echo '```'
    echo
  done
  if [ ${#FAILED[@]} -gt 0 ]; then
    echo "## Failures"
    echo
    for n in "${FAILED[@]}"; do
      echo "### $n"
      echo
      echo '```'
      if [ -f "$LOGS/$n.log" ]; then tail -n 40 "$LOGS/$n.log"; echo; else echo "(no log: the step did not start)"; fi
      echo '```'
      echo
    done
  fi
  echo "## Benchmark"
  echo
  if [ -f "$BENCH/nvdiffrast.md" ]; then sed 's/^#/##/' "$BENCH/nvdiffrast.md"; else echo "(no benchmark report)"; fi
} >"$REPORT"
echo "report: $REPORT ($(elapsed) s)" >&2
[ ${#FAILED[@]} -eq 0 ]
