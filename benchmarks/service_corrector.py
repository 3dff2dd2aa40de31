"""The model a pipeline run tuned, served as the corrector: verified rate vs the base model's.

    .venv/bin/python benchmarks/service_corrector.py RUN_DIR [--all-paths] [--max-paths N]
    .venv/bin/python benchmarks/service_corrector.py --quick     # makes a smoke run first (tiny model)

LeMa's training data teaches the correction task (correction examples use the `zero_shot`
corrector prompt), so the tuned model is a corrector too. This serves two apps on a loopback
port, `base` (the run's base model) and `adapter` (the same with the run's LoRA adapter,
`RUN_DIR/train/adapter`), and sends both inaccurate paths through /v1/correct/batch with their
gold answers. By default only held-out paths count: the tuned model's wrong answers to the
evaluation's test problems (never trained on); `--all-paths` takes the sample stage's inaccurate
paths of training problems instead (mostly trained on). The last line printed is one
JSON object: paths, verified rate and statuses for each model. Without RUN_DIR it first makes
the smoke run (configs/smoke.yaml, a tiny random model: about 2 minutes) and uses all its paths;
that exercises the path end to end, its rates say nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from lema.config import load_config  # noqa: E402
from pipelines.correct import is_inaccurate  # noqa: E402
from pipelines.stage_io import StageDir  # noqa: E402
from services.config import load_service_config  # noqa: E402
from services.loopback import serve_on_loopback  # noqa: E402


def run_adapter(run_dir: Path) -> str:
    """The adapter the run trained (the train stage manifest's URI).

    Raises:
        FileNotFoundError: the run has no finished train stage.
    """
    manifest = StageDir(run_dir, "train").manifest()
    if not manifest:
        raise FileNotFoundError(f"no finished train stage under {run_dir} (has the run trained?)")
    return manifest["adapter_dir"]


def inaccurate_paths(run_dir: Path, held_out: bool, max_paths: int | None) -> list[dict]:
    """Inaccurate paths as the correct stage selects them: the tuned model's wrong test answers
    (held out), or the sample stage's wrong paths of training problems."""
    if held_out:
        rows = [r for r in StageDir(run_dir, "evaluate").read_rows() if r["generator"].endswith("+tuned")]
    else:
        rows = StageDir(run_dir, "sample").read_rows()
    return sorted((r for r in rows if is_inaccurate(r)), key=lambda r: r["path_id"])[:max_paths]


def smoke_run() -> Path:
    """Run the pipeline on configs/smoke.yaml into a temporary dir; its run dir."""
    output_dir = Path(tempfile.mkdtemp(prefix="lema-smoke-"))
    subprocess.run([sys.executable, "-m", "pipelines.lema", str(ROOT / "configs" / "smoke.yaml"),
                    f"output_dir={output_dir}"], cwd=ROOT, check=True)
    return output_dir / "smoke"


def verified_rates(url: str, paths: list[dict], batch: int) -> dict:
    """Send each path (with its gold answer) through /v1/correct/batch; count the statuses."""
    statuses: Counter = Counter()
    with httpx.Client(base_url=url, timeout=1200) as client:
        for start in range(0, len(paths), batch):
            items = [{"question": p["question"], "solution": p["text"], "answer": p["answer"],
                      "dataset": p.get("dataset") or "gsm8k"} for p in paths[start:start + batch]]
            response = client.post("/v1/correct/batch", json={"items": items})
            response.raise_for_status()
            statuses.update(item["status"] for item in response.json()["items"])
    return {"verified_rate": round(statuses["verified"] / len(paths), 4) if paths else None,
            "statuses": dict(statuses)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path, nargs="?", help="<output_dir>/<run> of a finished pipeline run")
    ap.add_argument("--all-paths", action="store_true", help="all inaccurate paths, trained-on ones too")
    ap.add_argument("--max-paths", type=int, default=None, help="at most this many paths")
    ap.add_argument("--max-tokens", type=int, default=256, help="corrector reply length")
    ap.add_argument("--quick", action="store_true", help="short replies (and the smoke run without RUN_DIR)")
    args = ap.parse_args(argv)
    if args.run_dir is None:
        args.run_dir, args.all_paths = smoke_run(), True
    if args.quick:
        args.max_tokens = min(args.max_tokens, 48)
    run_dir = args.run_dir.resolve()
    run = load_config(run_dir / "config.yaml")
    base_model = run.base_model
    adapter = run_adapter(run_dir)
    paths = inaccurate_paths(run_dir, not args.all_paths, args.max_paths)

    common = ["corrector.prompt=zero_shot", f"corrector.sampling.max_tokens={args.max_tokens}",
              f"corrector.engine.model={base_model}", "corrector.timeout_s=1500", "request_timeout_s=1800",
              "ingress.num_cpus=0.1", "grader.deployment.num_cpus=0.1", f"grading_mode={run.grading_mode}"]
    apps = {"base": load_service_config(None, common),
            "adapter": load_service_config(None, [*common, f"corrector.engine.adapter={adapter}"])}
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        with serve_on_loopback(apps) as base_url:
            batch = apps["base"].limits.max_batch_items
            results = {name: verified_rates(f"{base_url}/{name}", paths, batch) for name in apps}
    finally:
        ray.shutdown()
    figures = {
        "run": str(run_dir), "base_model": base_model, "adapter": str(adapter),
        "paths": len(paths), "held_out_only": not args.all_paths, "prompt": "zero_shot",
        "base_verified_rate": results["base"]["verified_rate"],
        "adapter_verified_rate": results["adapter"]["verified_rate"],
        "base_statuses": results["base"]["statuses"], "adapter_statuses": results["adapter"]["statuses"],
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
