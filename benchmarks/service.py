"""The HTTP service under load: /v1/grade throughput and latency, /v1/correct's HTTP overhead.

    .venv/bin/python benchmarks/service.py --quick

Serves the default service (services/service.yaml: SmolLM2-135M corrector on CPU, shorter
replies here) on a free loopback port. A separate process sends `--grade-requests` /v1/grade
calls with `--concurrency` in flight (a mix of numeric and LaTeX answers) and reports requests/s,
p50/p99 latency and 5xx count. Then `--correct-calls` single /v1/correct calls one after another
are timed through HTTP, each followed by the same request through a direct `correct_paths` call on
the same engine config in a Ray actor (Ray workers run at the same low priority as Serve replicas);
`http_overhead_ratio` is HTTP median over direct median. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import ray  # noqa: E402

from services.config import CorrectorConfig, load_service_config  # noqa: E402
from services.loopback import serve_on_loopback  # noqa: E402
from services.serving import build_correction_service  # noqa: E402

APP = "bench"
GRADES = [
    {"prediction": "So she pays 3 * 4 = 12 dollars.\n#### 12", "gold": "12"},
    {"prediction": "The answer is 1,250.", "gold": "#### 1250"},
    {"prediction": "The answer is 7", "gold": "8"},
    {"prediction": "Thus $\\boxed{\\frac{1}{2}}$.", "gold": "0.5", "dataset": "math"},
    {"prediction": "So the answer is $\\boxed{2\\sqrt{2}}$", "gold": "\\sqrt{8}", "dataset": "math"},
]
CORRECT = {
    "question": "Ann buys 3 boxes of pens with 4 pens in each box and gives away 5 pens. How many pens are left?",
    "solution": "Step 1: 3 * 4 = 11 pens.\nStep 2: 11 - 5 = 6 pens.\nThe answer is 6.",
    "answer": "7",
}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def grade_load(url: str, requests: int, concurrency: int) -> dict:
    """Runs in its own process: `requests` /v1/grade calls, `concurrency` in flight."""

    async def run() -> dict:
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        todo = iter(range(requests))

        async def worker(client: httpx.AsyncClient) -> None:
            for i in todo:
                start = time.perf_counter()
                response = await client.post("/v1/grade", json=GRADES[i % len(GRADES)])
                latencies.append(time.perf_counter() - start)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            start = time.perf_counter()
            await asyncio.gather(*(worker(client) for _ in range(concurrency)))
            wall = time.perf_counter() - start
        return {"wall_s": wall, "latencies": latencies, "statuses": statuses}

    return asyncio.run(run())


class DirectCorrector:
    """A Ray actor (the same low priority as Serve replicas) timing the Corrector replica's own
    call, `CorrectionService.correct`, on an engine built as the replica builds it."""

    def __init__(self, service_cfg: dict):
        self.service = build_correction_service(CorrectorConfig.model_validate(service_cfg["corrector"]),
                                                service_cfg["grading_mode"])

    def correct_ms(self) -> float:
        start = time.perf_counter()
        self.service.correct([CORRECT])
        return (time.perf_counter() - start) * 1000


def correct_ms_pairs(url: str, direct, calls: int) -> tuple[list[float], list[float]]:
    """(HTTP ms, direct ms) of `calls` single corrections each, alternating so both see the same
    machine; one warm-up pair first."""
    http_ms, direct_ms = [], []
    with httpx.Client(base_url=url, timeout=600) as client:
        for _ in range(calls + 1):
            start = time.perf_counter()
            client.post("/v1/correct", json=CORRECT).raise_for_status()
            http_ms.append((time.perf_counter() - start) * 1000)
            direct_ms.append(ray.get(direct.correct_ms.remote()))
    return http_ms[1:], direct_ms[1:]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small run (a few minutes here)")
    ap.add_argument("--concurrency", type=int, default=16, help="/v1/grade requests in flight")
    ap.add_argument("--grade-requests", type=int, default=None, help="/v1/grade requests sent")
    ap.add_argument("--correct-calls", type=int, default=None, help="timed /v1/correct calls (each way)")
    ap.add_argument("--max-tokens", type=int, default=None, help="corrector reply length")
    ap.add_argument("--model", default="smollm2-135m", help="corrector model (tiny: HTTP overhead stands out)")
    args = ap.parse_args(argv)
    grade_requests = args.grade_requests or (600 if args.quick else 4000)
    correct_calls = args.correct_calls or (5 if args.quick else 12)
    max_tokens = args.max_tokens or (48 if args.quick else 128)

    cfg = load_service_config(None, [f"corrector.sampling.max_tokens={max_tokens}",
                                     f"corrector.engine.model={args.model}"])
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        with serve_on_loopback({APP: cfg}) as base_url:
            url = f"{base_url}/{APP}"
            httpx.post(f"{url}/v1/grade", json=GRADES, timeout=120).raise_for_status()  # warm the grader
            with multiprocessing.get_context("spawn").Pool(1) as pool:  # the load comes from another process
                load = pool.apply(grade_load, (url, grade_requests, args.concurrency))
            direct = ray.remote(num_cpus=1)(DirectCorrector).remote(cfg.model_dump(mode="json"))
            http_ms, direct_ms = correct_ms_pairs(url, direct, correct_calls)
    finally:
        ray.shutdown()

    latencies_ms = [s * 1000 for s in load["latencies"]]
    statuses = load["statuses"]
    figures = {
        "grade_rps": round(grade_requests / load["wall_s"], 1),
        "p50_ms": round(percentile(latencies_ms, 50), 1),
        "p99_ms": round(percentile(latencies_ms, 99), 1),
        "errors_5xx": sum(n for status, n in statuses.items() if int(status) >= 500),
        "grade_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "grade_requests": grade_requests,
        "concurrency": args.concurrency,
        "correct_http_ms_p50": round(statistics.median(http_ms), 1),
        "correct_direct_ms_p50": round(statistics.median(direct_ms), 1),
        "correct_calls": correct_calls,
        "corrector": cfg.corrector.engine.label,
        "max_tokens": max_tokens,
    }
    figures["http_overhead_ratio"] = round(figures["correct_http_ms_p50"] / figures["correct_direct_ms_p50"], 3)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
