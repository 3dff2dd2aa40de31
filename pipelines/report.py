"""The run report: `report.md` with PNG plots beside it, from every stage's manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _load(run_dir: Path, stages: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for s in stages:
        f = run_dir / s / "manifest.json"
        if f.is_file():
            out[s] = json.loads(f.read_text())
    return out


def _bar(ax, labels: list[str], values: list[float], title: str, fmt: str = "{:g}",
         rate: bool = False) -> None:
    bars = ax.bar(labels, values, color="#4c72b0")
    ax.set_title(title)
    if rate:  # rates on a 0-1 axis, so runs compare at a glance
        ax.set_ylim(0, 1)
    for b, v in zip(bars, values):
        ax.annotate(fmt.format(v), (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                    fontsize=8)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def write_report(run_dir: str, stages: list[str]) -> str:
    """Write report.md and its plots into run_dir; returns the report's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(run_dir)
    m = _load(root, stages)
    lines = [f"# LeMa run report: `{root.name}`", ""]
    plots: list[tuple[str, str]] = []

    # -- counts per stage
    counts = {
        "problems": m.get("problems", {}).get("problems", 0),
        "paths": m.get("sample", {}).get("paths", 0),
        "inaccurate": m.get("sample", {}).get("inaccurate", 0),
        "corrected": m.get("correct", {}).get("attempted", 0),
        "verified": m.get("correct", {}).get("verified", 0),
        "train examples": m.get("data", {}).get("train", 0),
    }
    fig, ax = plt.subplots(figsize=(7, 3.2))
    _bar(ax, list(counts), list(counts.values()), "Records per stage")
    plots.append(("Records per stage", _save(fig, root / "counts.png")))

    # -- generators: accuracy and inaccurate-path rate
    per = m.get("sample", {}).get("per_generator", {})
    if per:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        _bar(axes[0], list(per), [g["accuracy"] for g in per.values()], "Generator accuracy", "{:.2f}", rate=True)
        _bar(axes[1], list(per), [g["inaccurate"] / max(1, g["paths"] - g["failed"]) for g in per.values()],
             "Inaccurate-path rate", "{:.2f}", rate=True)
        plots.append(("Generators", _save(fig, root / "generators.png")))

    # -- corrections: outcomes and where the first mistake falls
    corr = m.get("correct", {})
    if corr.get("attempted"):
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        st = corr.get("status", {})
        _bar(axes[0], list(st), list(st.values()),
             f"Correction outcomes (verified {corr.get('verification_rate', 0):.0%})")
        hist = corr.get("incorrect_step_histogram", {})
        _bar(axes[1], [f"step {k}" for k in hist], list(hist.values()), "First incorrect step")
        plots.append(("Corrections", _save(fig, root / "corrections.png")))

    # -- training loss curve
    hist = m.get("train", {}).get("history", [])
    if hist:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        tr = [(h["step"], h["train_loss"]) for h in hist if h.get("train_loss") is not None]
        ev = [(h["step"], h["eval_loss"]) for h in hist if h.get("eval_loss") is not None]
        if tr:
            ax.plot(*zip(*tr), label="train loss")
        if ev:
            ax.plot(*zip(*ev), "o-", label="eval loss")
        ax.set_xlabel("optimizer step")
        ax.set_title("Training loss")
        ax.legend()
        plots.append(("Training", _save(fig, root / "training_loss.png")))

    # -- base vs adapter
    results = m.get("evaluate", {}).get("results", [])
    if results:
        lines += ["## Base vs adapter", "", "| dataset | model | problems | pass@1 | pass@k | majority |",
                  "|---|---|---|---|---|---|"]
        for r in results:
            pk = ", ".join(f"@{k}: {v:.3f}" for k, v in r.get("pass_at_k", {}).items())
            maj = "" if r.get("majority") is None else f"{r['majority']:.3f}"
            lines.append(f"| {r['dataset']} | {r['variant']} | {r['problems']} | {r['pass_at_1']:.3f} | {pk} | {maj} |")
        lines.append("")
        fig, ax = plt.subplots(figsize=(6, 3.2))
        _bar(ax, [f"{r['dataset']}\n{r['variant']}" for r in results], [r["pass_at_1"] for r in results],
             "pass@1", "{:.3f}", rate=True)
        plots.append(("Evaluation", _save(fig, root / "evaluation.png")))

    # -- per stage: records, tokens, wall time, cost
    lines += ["## Stages", "", "| stage | key figures | tokens | wall s | cost $ |", "|---|---|---|---|---|"]
    keys = {"problems": ["problems", "rejected"], "sample": ["paths", "correct", "inaccurate", "failed"],
            "correct": ["attempted", "parsed", "verified"], "data": ["cot", "correction", "train", "held_out"],
            "train": ["steps", "final_train_loss", "final_eval_loss"], "evaluate": []}
    for s in stages:
        if s not in m:
            lines.append(f"| {s} | not run | | | |")
            continue
        figs = ", ".join(f"{k} {m[s][k]}" for k in keys.get(s, []) if k in m[s])
        tok = m[s].get("tokens", m[s].get("train_tokens", ""))
        lines.append(f"| {s} | {figs} | {tok} | {m[s].get('wall_s', '')} | {m[s].get('cost', '')} |")
    lines.append("")
    if corr.get("reject_reasons"):
        lines += ["## Corrections not kept, by reason", ""]
        lines += [f"- {k}: {v}" for k, v in corr["reject_reasons"].items()] + [""]
    for title, png in plots:
        lines += [f"## {title}", "", f"![{title}]({png})", ""]
    path = root / "report.md"
    path.write_text("\n".join(lines))
    return str(path)
