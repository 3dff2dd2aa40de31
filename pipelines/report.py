"""The run report: `report.md` with PNG plots beside it, from every stage's manifest (written
through `lema.storage`, so a run on s3:// has its report there too)."""

from __future__ import annotations

import io
from typing import Any

from lema.storage import Storage


def _load(run_dir: Storage, stages: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for s in stages:
        manifest = run_dir.join(s, "manifest.json").read_json()
        if manifest is not None:
            out[s] = manifest
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


MAX_POINTS = 400  # a curve of more points is averaged in bins down to this many
MAX_STEP_BARS = 12  # first-mistake steps past this go into one "13+" bar


def binned(points: list[tuple[float, float]], max_points: int = MAX_POINTS) -> list[tuple[float, float]]:
    """Points averaged in consecutive bins (x and y alike) so a curve has at most `max_points`:
    a loss curve of a million steps reads like one of a thousand."""
    if len(points) <= max_points:
        return points
    size = -(-len(points) // max_points)
    bins = [points[i: i + size] for i in range(0, len(points), size)]
    return [(sum(x for x, _ in b) / len(b), sum(y for _, y in b) / len(b)) for b in bins]


def step_bars(hist: dict[str, int], max_bars: int = MAX_STEP_BARS) -> dict[str, int]:
    """The first-incorrect-step histogram as bars: one per step up to `max_bars`, the rest in one."""
    bars: dict[str, int] = {}
    for step, count in sorted(hist.items(), key=lambda kv: int(kv[0])):
        key = f"step {step}" if int(step) <= max_bars else f"{max_bars + 1}+"
        bars[key] = bars.get(key, 0) + count
    return bars


def _fmt(value: Any) -> str:
    """A figure for a person: floats to 4 significant digits, the rest as is."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def save_png(fig, path: Storage) -> str:
    """Lay out, write and close a matplotlib figure as a PNG at `path`; returns its file name."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png")
    plt.close(fig)
    path.write_bytes(buf.getvalue())
    return path.name


def write_report(run_dir: Storage, stages: list[str]) -> str:
    """Write report.md and its plots into run_dir; returns the report's URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = run_dir
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
    plots.append(("Records per stage", save_png(fig, root.join("counts.png"))))

    # -- generators: accuracy and inaccurate-path rate
    per = m.get("sample", {}).get("per_generator", {})
    if per:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        _bar(axes[0], list(per), [g["accuracy"] for g in per.values()], "Generator accuracy", "{:.2f}", rate=True)
        _bar(axes[1], list(per), [g["inaccurate"] / max(1, g["paths"] - g["failed"]) for g in per.values()],
             "Inaccurate-path rate", "{:.2f}", rate=True)
        plots.append(("Generators", save_png(fig, root.join("generators.png"))))

    # -- corrections: outcomes and where the first mistake falls
    corr = m.get("correct", {})
    if corr.get("attempted"):
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        st = corr.get("status", {})
        _bar(axes[0], list(st), list(st.values()),
             f"Correction outcomes (verified {corr.get('verification_rate', 0):.0%})")
        bars = step_bars(corr.get("incorrect_step_histogram", {}))
        _bar(axes[1], list(bars), list(bars.values()), "First incorrect step")
        plots.append(("Corrections", save_png(fig, root.join("corrections.png"))))

    # -- evolution: the seeds' difficulty beside the training questions', what it added
    evo = m.get("evolve", {})
    if evo.get("enabled"):
        fixes = m.get("evolve_correct", {})
        dropped = ", ".join(f"{k} {v}" for k, v in evo.get("dropped", {}).items()) or "none"
        lines += ["## Question evolution", "",
                  f"{evo.get('seeds', 0)} seeds ({evo.get('strategy')}; {evo.get('distinct_seeds', 0)} distinct "
                  f"questions, from {evo.get('corrections', 0)} verified corrections) -> {evo.get('kept', 0)} new "
                  f"questions kept by the {evo.get('evolver')} evolver (dropped: {dropped}) -> "
                  f"{m.get('evolve_sample', {}).get('inaccurate', 0)} inaccurate paths -> "
                  f"{fixes.get('verified', 0)} verified corrections (`origin: evolved`, correction data only).", ""]
        fig, ax = plt.subplots(figsize=(6, 3.2))
        width, bins = 0.4, len(evo.get("train_difficulty", []))
        for offset, key, label in ((-width / 2, "train_difficulty", "training questions"),
                                   (width / 2, "seed_difficulty", "seeds (per draw)")):
            counts = evo.get(key, [])
            total = max(1, sum(counts))
            ax.bar([i + offset for i in range(len(counts))], [c / total for c in counts], width, label=label)
        ax.set_xticks(range(bins), [f"{i / bins:.1f}" for i in range(bins)], fontsize=8)
        ax.set_xlabel("fraction of sampled paths correct (bin start)")
        ax.set_ylabel("share")
        ax.set_title("Difficulty of the evolution seeds")
        ax.legend()
        plots.append(("Evolution seeds", save_png(fig, root.join("evolution_seeds.png"))))

    # -- training loss curve
    hist = m.get("train", {}).get("history", [])
    if hist:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        tr = [(h["step"], h["train_loss"]) for h in hist if h.get("train_loss") is not None]
        ev = [(h["step"], h["eval_loss"]) for h in hist if h.get("eval_loss") is not None]
        if tr:
            ax.plot(*zip(*binned(tr)), label="train loss" + (" (binned means)" if len(tr) > MAX_POINTS else ""))
        if ev:
            ax.plot(*zip(*binned(ev)), "o-", label="eval loss")
        ax.set_xlabel("optimizer step")
        ax.set_title("Training loss")
        ax.legend()
        plots.append(("Training", save_png(fig, root.join("training_loss.png"))))

    # -- base -> start -> tuned, and checkpoint selection
    evaluate, train = m.get("evaluate", {}), m.get("train", {})
    results = [r for r in evaluate.get("results", []) if r["variant"] in ("base", "start", "tuned")
               and r["dataset"] != "dev"]
    if results:
        data = m.get("data", {})
        method = "full fine-tuning" if train.get("method") == "full" else train.get("method", "lora")
        lines += ["## Base, start and tuned model", "",
                  f"The tuned model ({method}) was trained on {data.get('cot', 0)} CoT examples and "
                  f"{data.get('correction', 0)} verified corrections"
                  + (", continuing from the start adapter" if any(r["variant"] == "start" for r in results) else "")
                  + ". pass@1 is graded `robust` (ours) and `lema_compat` (the LeMa paper's evaluation rules); "
                  "[a, b] is its 95% Wilson interval.", "",
                  "| dataset | model | problems | pass@1 [95% interval] | pass@1 lema_compat | pass@k | majority |",
                  "|---|---|---|---|---|---|---|"]
        for r in results:
            pk = ", ".join(f"@{k}: {v:.3f}" for k, v in r.get("pass_at_k", {}).items())
            maj = "" if r.get("majority") is None else f"{r['majority']:.3f}"
            lo, hi = r.get("ci95") or (0.0, 0.0)
            lines.append(f"| {r['dataset']} | {r['variant']} | {r['problems']} | {r['pass_at_1']:.3f} "
                         f"[{lo:.3f}, {hi:.3f}] | {r['pass_at_1_lema_compat']:.3f} | {pk} | {maj} |")
        lines.append("")
        fig, ax = plt.subplots(figsize=(6, 3.2))
        _bar(ax, [f"{r['dataset']}\n{r['variant']}" for r in results], [r["pass_at_1"] for r in results],
             "pass@1", "{:.3f}", rate=True)
        plots.append(("Evaluation", save_png(fig, root.join("evaluation.png"))))
    for sel in evaluate.get("selection") or []:
        d, b, t = sel["dev_selected"], sel["paper_best_on_test"], sel["paper_top3_mean_on_test"]
        lines += [f"## Checkpoint selection: {sel['dataset']}", "",
                  f"{sel['checkpoints']} checkpoints (steps {', '.join(map(str, sel['steps']))}); the dev split is "
                  f"{sel['dev_problems']} training problems held out of training.", "",
                  "| protocol | step | test pass@1 | what it is |", "|---|---|---|---|",
                  f"| chosen on dev | {d['step']} | {d['test_pass_at_1']:.3f} [{d['test_ci95'][0]:.3f}, "
                  f"{d['test_ci95'][1]:.3f}] | {d['what']} |",
                  f"| best on test | {b['step']} | {b['test_pass_at_1']:.3f} | {b['what']} |",
                  f"| top-3 mean on test | | {t['test_pass_at_1']:.3f} | {t['what']} |", ""]
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for dataset, style, label in ((sel["dataset"], "o-", f"{sel['dataset']} (test)"),
                                      ("dev", "s--", "dev (training problems held out)")):
            curve = sorted((r["step"], r["pass_at_1"]) for r in evaluate["results"]
                           if r["dataset"] == dataset and r.get("step") is not None)
            ax.plot(*zip(*curve), style, label=label)
        ax.axvline(d["step"], color="grey", linestyle=":", label="chosen on dev")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("pass@1")
        ax.legend()
        plots.append((f"Checkpoints ({sel['dataset']})", save_png(fig, root.join(f"checkpoints-{sel['dataset']}.png"))))

    # -- per stage: records, tokens, wall time, cost
    lines += ["## Stages", "", "| stage | key figures | tokens | wall s | items/s | cost $ |",
              "|---|---|---|---|---|---|"]
    keys = {"problems": ["problems", "rejected"], "sample": ["paths", "correct", "inaccurate", "failed"],
            "correct": ["attempted", "parsed", "verified"], "evolve": ["seeds", "distinct", "kept"],
            "evolve_sample": ["paths", "inaccurate"], "evolve_correct": ["attempted", "verified"],
            "data": ["cot", "correction", "train", "held_out"],
            "train": ["steps", "final_train_loss", "final_eval_loss"], "evaluate": []}
    for s in stages:
        if s not in m:
            lines.append(f"| {s} | not run | | | | |")
            continue
        figs = ", ".join(f"{k} {_fmt(m[s][k])}" for k in keys.get(s, []) if m[s].get(k) is not None)
        tok = m[s].get("tokens", m[s].get("train_tokens", ""))
        lines.append(f"| {s} | {figs} | {tok} | {_fmt(m[s].get('wall_s', ''))} | {_fmt(m[s].get('items_per_s', ''))} "
                     f"| {_fmt(m[s].get('cost', ''))} |")
    lines.append("")
    if corr.get("reject_reasons"):
        lines += ["## Corrections not kept, by reason", ""]
        lines += [f"- {k}: {v}" for k, v in corr["reject_reasons"].items()] + [""]
    for title, png in plots:
        lines += [f"## {title}", "", f"![{title}]({png})", ""]
    path = root.join("report.md")
    path.write_text("\n".join(lines))
    return path.uri
