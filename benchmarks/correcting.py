"""Correction-stage throughput against an OpenAI-compatible server with a fixed latency.

    .venv/bin/python benchmarks/correcting.py --quick

The corrector is our `openai` engine inside the correct stage (Ray Data, one actor), talking
to a loopback server that answers every request after `--latency` seconds with a realistic
corrector reply (the reference corrector's, for synthetic wrong paths), so each reply is parsed
and verified as in a real run. With `--concurrency` requests in flight the best possible rate
is concurrency / latency; the figure is the achieved rate over that bound. Steady state leaves
out actor start-up and engine build (it runs from the first request sent to the last answer,
through every chunk boundary); end to end counts everything from the stage's start.
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lema.config import load_config  # noqa: E402
from lema.reference_corrector import reference_correction  # noqa: E402
from lema.synthetic import generate_problems  # noqa: E402
from pipelines.correct import run_correct  # noqa: E402
from pipelines.stage_io import RunContext  # noqa: E402
from tests.fakes import FakeBehaviour, FakeOpenAIServer  # noqa: E402


def wrong_paths(n: int) -> tuple[list[dict], dict[str, dict]]:
    """n inaccurate paths: gold solutions with the first step's result broken."""
    problems = generate_problems(n, [2, 3, 4], seed=11)
    paths = []
    for i, p in enumerate(problems):
        lines = p.solution.splitlines()
        head, tail = lines[0].rsplit("=", 1)
        lines[0] = f"{head}= 9999 {tail.split(' ', 2)[-1]}"
        lines[-1] = "The answer is 9999."
        paths.append({"problem_id": p.id, "path_id": f"p{i:06d}", "generator": "g", "sample_index": 0,
                      "text": "\n".join(lines), "predicted_answer": "9999", "correct": False, "tokens": 1,
                      "dataset": "synthetic", "question": p.question, "answer": p.answer, "error": None})
    return paths, {p.id: p.to_dict() for p in problems}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small run (under 2 minutes here)")
    ap.add_argument("--latency", type=float, default=0.25, help="server latency per request, s")
    ap.add_argument("--concurrency", type=int, default=16, help="engine's max requests in flight")
    ap.add_argument("--calls", type=int, default=2, help="chunks one actor works on at once")
    ap.add_argument("--chunks", type=int, default=None, help="chunks (Ray Data rows) to correct")
    ap.add_argument("--chunk-size", type=int, default=None, help="paths per chunk")
    args = ap.parse_args(argv)
    chunks = args.chunks or (4 if args.quick else 8)
    chunk_size = args.chunk_size or (12 * args.concurrency if args.quick else 24 * args.concurrency)

    import ray

    paths, problems = wrong_paths(chunks * chunk_size)
    replies = {}
    for p in paths:
        pr = problems[p["problem_id"]]
        replies[p["question"]] = reference_correction(pr["steps"], pr["answer"], p["text"])

    answered: list[float] = []  # when the server answered each request (after its latency)

    def reply(messages):  # the question sits in the last user message
        answered.append(time.perf_counter())
        text = messages[-1]["content"]
        return next(r for q, r in replies.items() if q in text)

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    bound = args.concurrency / args.latency
    with FakeOpenAIServer(FakeBehaviour(latency_s=args.latency, reply=reply)) as srv, \
            tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, [
            "correct.corrector=llm", "correct.prompt=zero_shot", "correct.engine.backend=openai",
            "correct.engine.model=fake-corrector", f"correct.engine.openai.base_url={srv.base_url}",
            f"correct.engine.openai.max_concurrency={args.concurrency}",
            f"correct.pool.batch_size={chunk_size}", f"correct.pool.calls_per_actor={args.calls}",
        ])
        ctx = RunContext.from_rows(cfg, tmp, problems=list(problems.values()), sample=paths)
        stage = ctx.dir("correct")
        t0 = time.perf_counter()
        run_correct(ctx, stage, "bench")
        elapsed = time.perf_counter() - t0
        rows = stage.read_rows()
        max_in_flight = srv.max_in_flight
    ray.shutdown()

    verified = sum(r["status"] == "verified" for r in rows)
    e2e = len(rows) / elapsed
    # steady state: from the first request sent (its answer minus the latency) to the last answer
    steady = len(answered) / (answered[-1] - answered[0] + args.latency)
    figures = {
        "achieved_vs_bound": round(steady / bound, 3),
        "achieved_vs_bound_e2e": round(e2e / bound, 3),
        "corrections_per_s": round(steady, 2),
        "corrections_per_s_e2e": round(e2e, 2),
        "bound_per_s": round(bound, 2),
        "concurrency": args.concurrency,
        "latency_s": args.latency,
        "corrections": len(rows),
        "verified": verified,
        "server_max_in_flight": max_in_flight,
        "chunks": chunks,
        "calls_per_actor": args.calls,
        "chunk_size": chunk_size,
    }
    print(f"{len(rows)} corrections ({verified} verified) in {elapsed:.1f}s; bound "
          f"{bound:.1f}/s (concurrency {args.concurrency} / latency {args.latency}s)")
    print(f"steady state {steady:.1f}/s = {steady / bound:.1%} of the bound; end to end {e2e:.1f}/s")
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
