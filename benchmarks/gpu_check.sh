#!/usr/bin/env bash
# The engine on one CUDA GPU, in under 8 minutes: the CUDA tests, every available backend's outputs
# on the same inputs, the engine table and the training throughput per backend and precision.
# Writes gpu_check.json and gpu_check.md (plus the raw logs) into the output directory.
#
#   bash benchmarks/gpu_check.sh [OUTDIR]        # OUTDIR defaults to $OUT, else ./gpu_check_out
#
# Environment: PYTHON (default: python), GPU_CHECK_QUICK=1 (shorter runs), GPU_CHECK_DEVICE=cpu (a dry
# run of the whole pipeline on CPU, to test this script without a GPU). Needs the project
# importable (run from the repository root, or pip install -e .) and, for the backends,
# `pip install -e .[cuda]` (spconv-cu126) and/or a torchsparse build. Every step has its own
# timeout; a failed or skipped step is recorded, never hides the others.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUTDIR="${1:-${OUT:-$ROOT/gpu_check_out}}"
PY="${PYTHON:-python}"
mkdir -p "$OUTDIR"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export CUBLAS_WORKSPACE_CONFIG="${CUBLAS_WORKSPACE_CONFIG:-:4096:8}"  # deterministic cuBLAS for the flag test
export PYTHONUNBUFFERED=1
STEPS="$OUTDIR/steps.tsv"
: > "$STEPS"
START=$(date +%s)

# step NAME TIMEOUT_S CMD...: runs CMD with a timeout, logs to OUTDIR/NAME.log, records rc and seconds
step() {
  local name="$1" limit="$2"; shift 2
  local t0 rc
  t0=$(date +%s)
  echo ">> $name (timeout ${limit}s)"
  set +e
  timeout --kill-after=10 "$limit" "$@" > "$OUTDIR/$name.log" 2>&1
  rc=$?
  set -e
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$STEPS"
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then echo "   $name: timed out after ${limit}s"; 
  elif [ "$rc" != 0 ]; then echo "   $name: exit $rc (see $OUTDIR/$name.log)"; fi
  tail -n 3 "$OUTDIR/$name.log" | sed 's/^/   /'
  return 0
}

DEV="${GPU_CHECK_DEVICE:-cuda}"
if [ "$DEV" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA device visible to $PY (torch.cuda.is_available() is False): nothing to check"
  printf '{"skipped": "no CUDA device"}\n' > "$OUTDIR/gpu_check.json"
  printf '# GPU check\n\nSkipped: no CUDA device.\n' > "$OUTDIR/gpu_check.md"
  exit 0
fi

QUICK="${GPU_CHECK_QUICK:-0}"
ITERS=10; REPS=5
if [ "$QUICK" = 1 ]; then ITERS=4; REPS=3; fi

step env 30 "$PY" - "$DEV" <<'EOF'
import json, subprocess, sys, torch
from i2p.sparse import backend_available, native
gpu = sys.argv[1] == "cuda"
info = {"torch": torch.__version__, "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if gpu else "cpu (dry run)",
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if gpu else "",
        "spconv": backend_available("spconv"), "torchsparse": backend_available("torchsparse"),
        "cpu_native": native.status()}
for mod in ("spconv", "torchsparse", "cumm"):
    try:
        info[mod + "_version"] = __import__(mod).__version__
    except Exception as err:
        info[mod + "_version"] = f"absent ({type(err).__name__})"
try:
    info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                         "--format=csv,noheader"], capture_output=True, text=True,
                                        timeout=20).stdout.strip()
except Exception as err:
    info["nvidia_smi"] = f"unavailable ({err})"
print(json.dumps(info))
EOF

step tests 120 "$PY" -m pytest -q -p no:cacheprovider tests/sparse/test_cuda.py \
  "tests/sparse/test_grad.py::test_cuda_matches_cpu" -rs -s --junitxml="$OUTDIR/pytest.xml"

step backends 45 "$PY" - "$DEV" <<'EOF'
"""Every available backend on the same inputs: max |out - i2p| and |grad - i2p| per layer type, fp32."""
import json, sys, torch
from torch import nn
from i2p.sparse import Conv3d, SparseTensor, backend_available, set_backend
from models.backbones.resnet import SparseResNet
from tests.helpers.sparse import random_sparse

def run(net, x, backend):
    set_backend(net, backend)
    net.zero_grad(set_to_none=True)
    f = x.feats.clone().requires_grad_(True)
    y = net(x.replace(f))
    out = y.feats if isinstance(y, SparseTensor) else y
    (out * torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out)).sum().backward()
    return out.detach(), f.grad, [p.grad for p in net.parameters()]

torch.manual_seed(0)
x = random_sparse(batch=4, size=16, channels=16, dtype=torch.float32, seed=1, density=0.4)
dev = sys.argv[1]
x = SparseTensor(x.feats.to(dev), x.coords.to(dev))
cases = {f"k{k}s{s}{'T' if t else ''}": (k, s, t) for k, s, t in
         [(3, 1, False), (1, 1, False), (2, 2, False), (3, 2, False), (2, 2, True), (3, 2, True)]}
libs = ["i2p"] + [b for b in ("spconv", "torchsparse") if backend_available(b)]
res = {}
for name, (k, s, t) in cases.items():
    net = nn.Sequential(*([Conv3d(16, 16, k, stride=s)] if t else []),
                        Conv3d(16, 16, k, stride=s, transposed=t)).to(dev)
    ref = run(net, x, "i2p")
    for lib in libs[1:]:
        try:
            got = run(net, x, lib)
            res[f"{name}/{lib}"] = {"out": float((got[0] - ref[0]).abs().max()),
                                    "grad_x": float((got[1] - ref[1]).abs().max()),
                                    "grad_w": max(float((a - b).abs().max()) for a, b in zip(got[2], ref[2]))}
        except Exception as err:
            res[f"{name}/{lib}"] = {"error": f"{type(err).__name__}: {err}"}
model = SparseResNet("basic", (1, 1, 1, 1), num_classes=4, channels=(16, 16, 32, 32)).to(dev).train()
xs = random_sparse(batch=8, size=12, channels=3, dtype=torch.float32, seed=2, density=0.4)
xs = SparseTensor(xs.feats.to(dev), xs.coords.to(dev))
ref = run(model, xs, "i2p")
for lib in libs[1:]:
    try:
        got = run(model, xs, lib)
        res[f"resnet/{lib}"] = {"out": float((got[0] - ref[0]).abs().max()),
                                "grad_w": max(float((a - b).abs().max()) for a, b in zip(got[2], ref[2]))}
    except Exception as err:
        res[f"resnet/{lib}"] = {"error": f"{type(err).__name__}: {err}"}
print(json.dumps({"backends": libs, "max_abs_diff_vs_i2p": res}))
EOF

BACKENDS=""
"$PY" -c "from i2p.sparse import backend_available as b; import sys; sys.exit(0 if b('spconv') else 1)" 2>/dev/null \
  && BACKENDS="$BACKENDS spconv"
"$PY" -c "from i2p.sparse import backend_available as b; import sys; sys.exit(0 if b('torchsparse') else 1)" 2>/dev/null \
  && BACKENDS="$BACKENDS torchsparse"

# shellcheck disable=SC2086
step engine_fp32 60 "$PY" benchmarks/sparse_conv.py --device "$DEV" --quick --reps "$REPS" --no-memory \
  --backends $BACKENDS --json "$OUTDIR/engine_fp32.json"
# shellcheck disable=SC2086
step engine_bf16 60 "$PY" benchmarks/sparse_conv.py --device "$DEV" --quick --reps "$REPS" --no-memory \
  --autocast bf16 --backends $BACKENDS --json "$OUTDIR/engine_bf16.json"
# shellcheck disable=SC2086
step train 120 "$PY" benchmarks/train_throughput.py --device "$DEV" --regimes io all --iters "$ITERS" \
  --precisions 32 bf16-mixed --backends i2p $BACKENDS --json "$OUTDIR/train.json"

step report 20 "$PY" - "$OUTDIR" <<'EOF'
"""One JSON and one Markdown file from the steps' outputs."""
import json, os, sys
out = sys.argv[1]

def load(name):
    p = os.path.join(out, name)
    try:
        with open(p) as f:
            return json.load(f)
    except Exception as err:
        return {"missing": f"{name}: {type(err).__name__}"}

def last_json_line(log):
    try:
        lines = [ln for ln in open(os.path.join(out, log)).read().splitlines() if ln.startswith("{")]
        return json.loads(lines[-1]) if lines else {"missing": log}
    except Exception as err:
        return {"missing": f"{log}: {type(err).__name__}"}

steps = [dict(zip(("step", "rc", "seconds"), ln.split("\t"))) for ln in open(os.path.join(out, "steps.tsv"))
         if ln.strip()]
tests_tail = open(os.path.join(out, "tests.log")).read().strip().splitlines()[-12:] \
    if os.path.exists(os.path.join(out, "tests.log")) else []
report = {"env": last_json_line("env.log"), "steps": steps, "tests": tests_tail,
          "backends": last_json_line("backends.log"), "engine_fp32": load("engine_fp32.json"),
          "engine_bf16": load("engine_bf16.json"), "train": load("train.json")}
with open(os.path.join(out, "gpu_check.json"), "w") as f:
    json.dump(report, f, indent=1)

md = ["# GPU check", "", "```", json.dumps(report["env"], indent=1), "```", "", "## Steps", "",
      "| step | exit | s |", "|---|---|---|"]
md += [f"| {s['step']} | {s['rc'].strip()} | {s['seconds'].strip()} |" for s in steps]
md += ["", "## CUDA tests (tail)", "", "```", *tests_tail, "```", "", "## Backends vs i2p (max abs diff)", "",
       "| case | out | grad x | grad w | error |", "|---|---|---|---|---|"]
for k, v in report["backends"].get("max_abs_diff_vs_i2p", {}).items():
    md.append(f"| {k} | {v.get('out', '')} | {v.get('grad_x', '')} | {v.get('grad_w', '')} | {v.get('error', '')} |")
for key in ("engine_fp32", "engine_bf16"):
    md += ["", f"## Engine table ({key[7:]})", "",
           "| cloud | case | C | engine | kmap ms | fwd ms | bwd ms | total ms | %dense | diff |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report[key].get("rows", []):
        if "error" in r:
            md.append(f"| {r['cloud']} | {r['case']} | {r['c']} | {r['engine']} | failed: {r['error'][:60]} |||||")
        else:
            md.append(f"| {r['cloud']} | {r['case']} | {r['c']} | {r['engine']} | {r['kmap']:.2f} | {r['fwd']:.2f} | "
                      f"{r['bwd']:.2f} | {r['total']:.2f} | {r['pct']:.0f} | {r['diff']:.1e} |")
md += ["", "## Training throughput (ResNet-18, samples/s)", "", "| regime | backend | precision | s/step | samples/s |",
       "|---|---|---|---|---|"]
for r in report["train"].get("rows", []):
    if "error" in r:
        md.append(f"| {r['regime']} | {r['backend']} | {r['precision']} | failed: {r['error'][:60]} | |")
    else:
        md.append(f"| {r['regime']} | {r['backend']} | {r['precision']} | {r['s_per_step']:.3f} | "
                  f"{r['samples_per_s']:.1f} |")
with open(os.path.join(out, "gpu_check.md"), "w") as f:
    f.write("\n".join(md) + "\n")
print(f"wrote {out}/gpu_check.json and {out}/gpu_check.md")
EOF

echo "gpu_check: done in $(( $(date +%s) - START )) s; results in $OUTDIR/gpu_check.md and gpu_check.json"
