"""The LeMa effect, measured: CoT + verified corrections vs CoT alone, and the paper's size controls.

    .venv/bin/python benchmarks/lema_effect.py            # configs/cpu_lema.yaml: about an hour on 2 quiet cores
    .venv/bin/python benchmarks/lema_effect.py --quick    # a tiny random model: the mechanics, a few minutes
    .venv/bin/python benchmarks/lema_effect.py --config configs/gsm8k_lema.yaml --start-steps 0   # a cluster

Everything runs through the loop itself (`pipelines.lema.main_pipeline`), one run per arm, on the
same problems, the same sampled mistakes (`reuse`: the arms take over the sample and correct
stages of the first arm) and the same held-out test problems:
- start: a LoRA on gold CoT from the base model (`--start-steps`; the paper's generators already
  reason step by step, a 135M model does not); its evaluation also gives the base model's score.
- mistakes: the start model samples the config's n solutions per training problem; the wrong
  ones go to the config's corrector (the reference corrector on synthetic problems).
- arms, each continuing from the start adapter: (a) cot = gold CoT; (b) lema = gold CoT +
  verified corrections; and the paper's data-size controls (its Fig. 4, `DataConfig` options):
  (c) cot_corrected = gold CoT + the same corrections' corrected solutions as CoT examples
  (question -> corrected solution, the CoT prompt: "CoT-45K"), (b)'s size by construction;
  (d) lema_trimmed = (b) with CoT examples dropped at random (seeded) down to (a)'s size
  ("LeMa-32K"). The reference corrector's corrected solution is the gold one, so on synthetic
  problems (c) repeats gold CoT examples (a copy per corrected path). Sizes count before the
  held-out split (`data.eval_fraction`, by problem), so with a held-out fraction (d)'s training
  examples may differ from (a)'s by a few; the report says so. (c) replaces the earlier
  cot_same_size arm (CoT enlarged with correct sampled paths), which ran short of (b)'s size
  whenever the start model had too few distinct correct paths.
- the paper's evolution arms (LeMa §2.2), in the equal-epochs protocol: (e) lema_evolve_cc =
  (b) + the verified corrections of questions evolved from seeds drawn by corrections
  (correction-centric); (f) lema_evolve_general = the same with seeds drawn uniformly from all
  training questions (the paper's control); equal seed counts (`--evolve-seeds`, default (b)'s
  corrections). The reference evolver on synthetic problems; with `--config`, the config's own.
- two protocols: equal epochs (the paper's: every arm trains `--epochs` over its own data, so
  (b) and (c) take more steps) and equal steps (every arm takes (a)'s step count; (d) already
  does when its size is (a)'s, and its one run serves both).
Reported: pass@1 per arm with 95% Wilson intervals and its example count; the paired differences
(b)-(a), (b)-(c) and (d)-(a) with 95% intervals and an exact McNemar p-value, and each evolution
arm against (b) and against each other; corrections used (and added by each evolution); wall
time per stage. A table
and a bar plot go into <output_dir>/<prefix>-report/report.md. The last line printed is one JSON
object (its headline figures are the equal-epochs protocol; `equal_steps` holds the other).
In MLflow the experiment is one run named <prefix> with every arm's run nested in it; the summary's
figures (pass@1 and intervals per arm, the paired differences, their intervals and McNemar p) are
its metrics and the report its artifact.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lema.config import LemaConfig, load_config  # noqa: E402
from lema.metrics import paired_difference, wilson_interval  # noqa: E402
from lema.storage import Storage  # noqa: E402
from pipelines.evaluate import DEV  # noqa: E402
from pipelines.lema import STAGE_NAMES, main_pipeline  # noqa: E402
from pipelines.report import save_png  # noqa: E402
from pipelines.stage_io import StageDir  # noqa: E402
from pipelines.tracking import Tracker  # noqa: E402

ARMS = ("cot", "lema", "cot_corrected", "lema_trimmed")
SIZE_OF = {"cot_corrected": "lema", "lema_trimmed": "cot"}  # a size control: the arm whose size it takes
DIFFS = (("lema", "cot"), ("lema", "cot_corrected"), ("lema_trimmed", "cot"))  # (b, a): b - a, paired
EVOLVE_ARMS = {"lema_evolve_cc": "correction_centric", "lema_evolve_general": "general"}


# ---------------------------------------------------------------- settings
CPU_CONFIG = ROOT / "configs" / "cpu_lema.yaml"  # SmolLM2-135M, synthetic 2-3 step problems
QUICK = ["sample.generators.0.engine.model=tiny-128x2", "train.base_model=tiny-128x2", "problems.count=16",
         "evaluate.datasets.0.count=16", "sample.generators.0.sampling.max_tokens=48",
         "evaluate.sampling.max_tokens=48"]  # the mechanics in a few minutes, nothing learnt


def derive(base: dict[str, Any], run: str, **parts: dict[str, Any]) -> LemaConfig:
    """The base config with `run` and some top-level parts updated (one level deep)."""
    cfg = json.loads(json.dumps(base))
    cfg["run"] = run
    for key, update in parts.items():
        cfg[key] = {**cfg.get(key, {}), **update} if isinstance(update, dict) else update
    return LemaConfig.model_validate(cfg)


# ---------------------------------------------------------------- statistics
def score(verdicts: dict[str, bool]) -> dict[str, Any]:
    """pass@1 and its 95% Wilson interval."""
    k, n = sum(verdicts.values()), len(verdicts)
    return {"pass1": round(k / n, 4) if n else 0.0, "ci95": [round(x, 4) for x in wilson_interval(k, n)], "n": n}


def paired(a: dict[str, bool], b: dict[str, bool]) -> dict[str, Any]:
    """b - a on the same problems, rounded for the report."""
    d = paired_difference(a, b)
    return {**d, "diff": round(d["diff"], 4), "ci95": [round(x, 4) for x in d["ci95"]],
            "mcnemar_p": float(f"{d['mcnemar_p']:.3g}")}


# ---------------------------------------------------------------- runs
def run_arm(cfg: LemaConfig) -> dict[str, Any]:
    """Run one arm through the loop; its per-problem verdicts, manifests and wall times."""
    t0 = time.perf_counter()
    main_pipeline(cfg)
    run_dir = Storage(cfg.output_dir).join(cfg.run)
    manifests = {s: StageDir(run_dir, s).manifest() or {} for s in STAGE_NAMES}
    verdicts: dict[str, dict[str, bool]] = {}
    evaluate = StageDir(run_dir, "evaluate")
    for part in sorted(p for p in evaluate.done_parts() if not p.startswith(f"{DEV}--")):  # test sets only
        for row in evaluate.read_part(part):
            variant = row["generator"].rsplit("+", 1)[-1]
            verdicts.setdefault(variant, {})[row["problem_id"]] = bool(row["correct"])
    # the arm's score: the checkpoint chosen on the dev split when there are several (train.checkpoints)
    selection = manifests["evaluate"].get("selection") or []
    chosen = selection[0]["dev_selected"] if selection else {"variant": "tuned", "step": None}
    step = chosen["step"]
    verdicts["selected"] = verdicts.get(chosen["variant"], {})
    return {"run": cfg.run, "verdicts": verdicts, "manifests": manifests, "selected_step": step,
            "wall_s": {s: m.get("wall_s") for s, m in manifests.items()}, "total_s": time.perf_counter() - t0}


def experiment(base: dict[str, Any], prefix: str, start_steps: int, epochs: float,
               evolve: dict[str, Any] | None = None, evolve_seeds: int | None = None,
               method: str = "lora", full_lr: float = 5e-5, equal_steps: bool = True) -> dict[str, Any]:
    """All arms, both protocols (`equal_steps` False: equal epochs only); returns every run's
    results by arm name. `evolve`: the evolution arms' evolve settings beside strategy and seeds
    (None: no evolution arms). `method` full: every arm fine-tunes all weights (at `full_lr`) of
    the start model (the start adapter merged into the base), run names <prefix>-full-<arm>; the
    start, the sampled mistakes, their corrections and the data are the LoRA arms' (taken over)."""
    runs: dict[str, dict[str, Any]] = {}
    generators = base["sample"]["generators"]
    arm_train: dict[str, Any] = {"epochs": epochs, "max_steps": None}
    if start_steps:
        start = derive(base, f"{prefix}-start", sample={"generators": []},
                       data={"include_corrections": False},
                       train={"max_steps": start_steps, "merge": True, "checkpoints": 0}, evaluate={"base": True})
        runs["start"] = run_arm(start)
        adapter = runs["start"]["manifests"]["train"]["adapter_dir"]
        generators = [{**g, "engine": {**g["engine"], "adapter": adapter}} for g in generators]
        arm_train["init_adapter"] = adapter
    if method == "full":
        start_model = runs["start"]["manifests"]["train"]["merged_dir"] if start_steps else base["train"]["base_model"]
        arm_train.update({"method": "full", "base_model": start_model, "init_adapter": None, "merge": False,
                          "learning_rate": full_lr})
    sample = {"generators": generators}
    runs_named = f"{prefix}-full" if method == "full" else prefix
    firsts = [f"{prefix}-lema", f"{prefix}-full-lema"]  # whichever ran first holds the mistakes

    def arm(name: str, data: dict[str, Any], train: dict[str, Any], with_base: bool = False,
            evolution: dict[str, Any] | None = None) -> None:
        run = f"{runs_named}-{name}"
        cfg = derive(base, run, sample=sample, data=data, train={**arm_train, **train},
                     evaluate={"base": with_base}, reuse=[r for r in firsts if r != run],
                     evolve=evolution or {"enabled": False})
        runs[name] = run_arm(cfg)

    arm("lema", {"include_corrections": True}, {}, with_base=not start_steps)
    lema_data = runs["lema"]["manifests"]["data"]
    arm("cot", {"include_corrections": False}, {})
    # the paper's size controls: CoT-45K (lema's size by construction) and LeMa-32K (cot's size)
    corrected = {"include_corrections": True, "corrections_as": "cot"}
    trimmed = {"include_corrections": True, "max_examples": max(1, runs["cot"]["manifests"]["data"]["cot"])}
    arm("cot_corrected", corrected, {})
    arm("lema_trimmed", trimmed, {})
    steps = runs["cot"]["manifests"]["train"]["steps"]  # equal steps: (a)'s count for every arm
    if equal_steps:
        arm("lema-equal-steps", {"include_corrections": True}, {"max_steps": steps})
        arm("cot_corrected-equal-steps", corrected, {"max_steps": steps})
        if runs["lema_trimmed"]["manifests"]["train"]["steps"] != steps:  # else its run serves both protocols
            arm("lema_trimmed-equal-steps", trimmed, {"max_steps": steps})
    if evolve is not None:
        seeds = evolve_seeds or max(1, lema_data["correction"])
        for name, strategy in EVOLVE_ARMS.items():
            arm(name, {"include_corrections": True}, {},
                evolution={**evolve, "enabled": True, "strategy": strategy, "seeds": seeds})
    return runs


def summarize(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    base_run = runs.get("start") or runs["lema"]
    base = base_run["verdicts"]["base"]
    n = len(base)

    def protocol(run_of: dict[str, str]) -> dict[str, Any]:
        """The arms' scores, differences, steps and training examples; `run_of`: arm -> its run."""
        verdicts = {arm: runs[r]["verdicts"]["selected"] for arm, r in run_of.items()}
        return {"arms": {"base": score(base), **{arm: score(v) for arm, v in verdicts.items()}},
                **{f"{b}_minus_{a}": paired(verdicts[a], verdicts[b]) for b, a in DIFFS},
                "steps": {arm: runs[r]["manifests"]["train"]["steps"] for arm, r in run_of.items()},
                "examples": {arm: runs[r]["manifests"]["data"]["train"] for arm, r in run_of.items()},
                "mix": {arm: {k: runs[r]["manifests"]["data"][k] for k in ("cot", "correction")}
                        for arm, r in run_of.items()},  # before the held-out split
                "selected_step": {arm: runs[r]["selected_step"] for arm, r in run_of.items()},
                "pass1_last": {arm: score(runs[r]["verdicts"]["tuned"])["pass1"] for arm, r in run_of.items()},
                "runs": run_of}

    epochs = protocol({arm: arm for arm in ARMS})
    steps = protocol({"cot": "cot", "lema": "lema-equal-steps", "cot_corrected": "cot_corrected-equal-steps",
                      "lema_trimmed": "lema_trimmed-equal-steps" if "lema_trimmed-equal-steps" in runs
                      else "lema_trimmed"}) if "lema-equal-steps" in runs else None
    lema_verdicts = runs["lema"]["verdicts"]["selected"]
    evolution: dict[str, Any] = {}  # the evolution arms' headline figures
    for name in (n for n in EVOLVE_ARMS if n in runs):
        verdicts, m = runs[name]["verdicts"]["selected"], runs[name]["manifests"]
        epochs["arms"][name] = score(verdicts)
        epochs[f"{name}_minus_lema"] = paired(lema_verdicts, verdicts)
        epochs["steps"][name] = m["train"]["steps"]
        epochs["examples"][name] = m["data"]["train"]
        epochs.setdefault("evolution", {})[name] = {
            **{k: m["evolve"].get(k) for k in ("seeds", "distinct_seeds", "kept", "dropped",
                                               "seed_difficulty", "train_difficulty")},
            "evolved_inaccurate": m["evolve_sample"].get("inaccurate", 0),
            "corrections_added": m["evolve_correct"].get("verified", 0),
            "correction_examples": m["data"]["correction"]}
        evolution.update({f"pass1_{name}": epochs["arms"][name]["pass1"],
                          f"{name}_minus_lema": epochs[f"{name}_minus_lema"]["diff"],
                          f"{name}_minus_lema_ci95": epochs[f"{name}_minus_lema"]["ci95"],
                          f"corrections_added_{name}": m["evolve_correct"].get("verified", 0)})
    if all(n in runs for n in EVOLVE_ARMS):
        epochs["lema_evolve_cc_minus_general"] = paired(runs["lema_evolve_general"]["verdicts"]["selected"],
                                                        runs["lema_evolve_cc"]["verdicts"]["selected"])
    corr = runs["lema"]["manifests"]["correct"]
    out = {
        "protocol": "equal_epochs",
        "pass1_base": epochs["arms"]["base"]["pass1"],
        "pass1_start": score(runs["start"]["verdicts"]["tuned"])["pass1"] if "start" in runs else None,
        "pass1_cot": epochs["arms"]["cot"]["pass1"],
        "pass1_lema": epochs["arms"]["lema"]["pass1"],
        "pass1_cot_corrected": epochs["arms"]["cot_corrected"]["pass1"],
        "pass1_lema_trimmed": epochs["arms"]["lema_trimmed"]["pass1"],
        **headline_diffs(epochs),
        "examples": epochs["examples"],
        "n_test": n,
        "n_corrections": runs["lema"]["manifests"]["data"]["correction"],
        "inaccurate_paths": corr.get("attempted", 0),
        **evolution,
        "equal_epochs": epochs,
        "equal_steps": steps,
        "wall_s": {name: {**{k: v for k, v in r["wall_s"].items() if v is not None}, "total": round(r["total_s"], 1)}
                   for name, r in runs.items()},
    }
    return out


def headline_diffs(p: dict[str, Any]) -> dict[str, Any]:
    """A protocol's paired differences as flat figures: diff, 95% interval, McNemar p."""
    out: dict[str, Any] = {}
    for b, a in DIFFS:
        d = p[f"{b}_minus_{a}"]
        out.update({f"{b}_minus_{a}": d["diff"], f"{b}_minus_{a}_ci95": d["ci95"], f"{b}_minus_{a}_p": d["mcnemar_p"]})
    return out


# ---------------------------------------------------------------- report
def write_report(result: dict[str, Any], where: Storage) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    how = {"full": "full fine-tuning of the start model (the start adapter merged)",
           "lora": "LoRA continuing from the start adapter"}[result.get("method", "lora")]
    lines = ["# The LeMa effect", "",
             f"Every arm: {how}" + (f"; each scored at the checkpoint chosen on the dev split (steps "
                                     f"{result['equal_epochs']['selected_step']})"
                                     if any(result["equal_epochs"]["selected_step"].values()) else "") + ".", "",
             f"{result['n_test']} held-out test problems, the same for every arm; "
             f"{result['n_corrections']} verified corrections (of {result['inaccurate_paths']} inaccurate paths).", "",
             "The size controls (the paper's Fig. 4): cot_corrected is cot plus the same corrections' corrected "
             "solutions as CoT examples (question -> corrected solution, the CoT prompt: \"CoT-45K\"), lema's "
             "size; lema_trimmed is lema with CoT examples dropped at random (seeded) to cot's size (\"LeMa-32K\").",
             ""]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    protocols = (("equal_epochs", "equal epochs (the paper's)"), ("equal_steps", "equal steps"))
    for ax, (key, title) in zip(axes, protocols):
        p = result[key]
        if p is None:
            lines += [f"## {title}", "", "Not run (--no-equal-steps).", ""]
            continue
        lines += [f"## {title}", "", "| arm | examples | steps | pass@1 | 95% interval |", "|---|---|---|---|---|"]
        names = ["base", *ARMS, *(a for a in EVOLVE_ARMS if a in p["arms"])]
        for arm in names:
            s = p["arms"][arm]
            lines.append(f"| {arm} | {p['examples'].get(arm, '')} | {p['steps'].get(arm, '')} | {s['pass1']:.3f} | "
                         f"{s['ci95'][0]:.3f} to {s['ci95'][1]:.3f} |")
        diffs = [(f"{b} - {a}", p[f"{b}_minus_{a}"]) for b, a in DIFFS]
        diffs += [(f"{a} - lema", p[f"{a}_minus_lema"]) for a in EVOLVE_ARMS if f"{a}_minus_lema" in p]
        if "lema_evolve_cc_minus_general" in p:
            diffs.append(("lema_evolve_cc - lema_evolve_general", p["lema_evolve_cc_minus_general"]))
        for label, d in diffs:
            lines.append("")
            lines.append(f"{label}: {d['diff']:+.3f} (95% interval {d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f}; "
                         f"McNemar p = {d['mcnemar_p']:.3g}; {d['only_b']} problems only the first solves, "
                         f"{d['only_a']} only the other)")
        for name, e in p.get("evolution", {}).items():
            lines += ["", f"{name}: {e['seeds']} seeds ({e['distinct_seeds']} distinct questions; accuracy of the "
                          f"seeds per draw in tenths {e['seed_difficulty']}, of all training questions "
                          f"{e['train_difficulty']}) -> {e['kept']} new questions (dropped {e['dropped'] or 'none'}) "
                          f"-> {e['evolved_inaccurate']} inaccurate paths -> {e['corrections_added']} corrections "
                          f"added ({e['correction_examples']} correction examples in all)"]
        for arm, of in SIZE_OF.items():
            mine, theirs, mix = p["examples"][arm], p["examples"][of], p["mix"][arm]
            lines += ["", f"{arm}: {mine} training examples ({mix['cot']} CoT + {mix['correction']} corrections"
                          f"{' as CoT' if arm == 'cot_corrected' else ''}), {of}: {theirs}" + (
                " (the same size)." if mine == theirs else
                f": {'more' if mine > theirs else 'fewer'} by {abs(mine - theirs)}, as the sizes are matched before "
                "the held-out split (data.eval_fraction, by problem).")]
        if p["mix"]["lema_trimmed"]["correction"] < p["mix"]["lema"]["correction"]:
            lines += ["", "lema's corrections alone outnumber cot's examples: lema_trimmed keeps no CoT example and "
                          f"{p['mix']['lema_trimmed']['correction']} of lema's {p['mix']['lema']['correction']} "
                          "corrections (at random, seeded)."]
        if p["runs"]["lema_trimmed"] == "lema_trimmed" and key == "equal_steps":
            lines += ["", "lema_trimmed's equal-epochs run already takes cot's steps: the one run serves both."]
        lines.append("")
        values = [p["arms"][a]["pass1"] for a in names]
        errors = [[v - p["arms"][a]["ci95"][0] for a, v in zip(names, values)],
                  [p["arms"][a]["ci95"][1] - v for a, v in zip(names, values)]]
        ax.bar(names, values, yerr=errors, capsize=4,
               color=["#999999", "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"][:len(names)])
        ax.set_title(title)
        ax.set_ylim(0, 1)
        ax.tick_params(axis="x", labelrotation=15)
    axes[0].set_ylabel("pass@1 (95% interval)")
    save_png(fig, where.join("lema_effect.png"))
    lines += ["![pass@1 per arm](lema_effect.png)", "", "## Wall time per run and stage (s)", ""]
    lines += [f"- {name}: {json.dumps(w)}" for name, w in result["wall_s"].items()]
    where.join("report.md").write_text("\n".join(lines) + "\n")
    return where.join("report.md").uri


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny random model, few problems: the mechanics")
    parser.add_argument("--config", help="run the arms from this config (e.g. a cluster config) instead")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides of the base config")
    parser.add_argument("--start-steps", type=int, default=None,
                        help="steps of the shared CoT start (0: none; default 4 quick, 60 CPU, 0 with --config)")
    parser.add_argument("--epochs", type=float, default=1.0, help="epochs of each arm (equal-epochs protocol)")
    parser.add_argument("--prefix", default="lema-effect", help="run names: <prefix>-<arm>")
    parser.add_argument("--evolve-seeds", type=int, default=None,
                        help="seeds of each evolution arm (default: the lema arm's verified corrections)")
    parser.add_argument("--no-evolve", action="store_true", help="leave out the evolution arms")
    parser.add_argument("--no-equal-steps", action="store_true", help="the equal-epochs protocol only")
    parser.add_argument("--method", choices=["lora", "full", "both"], default="lora",
                        help="how the arms fine-tune: LoRA from the start adapter, every weight of the start "
                             "model, or both on the same mistakes (full's report: <prefix>-full-report)")
    parser.add_argument("--full-lr", type=float, default=5e-5, help="learning rate of full fine-tuning")
    parser.add_argument("--checkpoints", type=int, default=0,
                        help="N snapshots per arm, the arm scored at the one chosen on a dev split of held-out "
                             "training problems (data.eval_fraction, 0.2 when the config has none)")
    args = parser.parse_args()
    overrides = (QUICK if args.quick else []) + args.overrides
    if args.checkpoints:
        overrides += [f"train.checkpoints={args.checkpoints}"]
        if not load_config(args.config or CPU_CONFIG, overrides).data.eval_fraction:
            overrides += ["data.eval_fraction=0.2"]
    base = load_config(args.config or CPU_CONFIG, overrides).model_dump(mode="json")
    default_start = 0 if args.config else 4 if args.quick else 60
    start_steps = default_start if args.start_steps is None else args.start_steps
    t0 = time.perf_counter()
    # synthetic problems: the reference evolver (exact labels); a given config evolves as it says
    evolve = None if args.no_evolve else {} if args.config else {"evolver": "reference"}
    results = {}
    for method in (["lora", "full"] if args.method == "both" else [args.method]):
        named = f"{args.prefix}-full" if method == "full" else args.prefix
        where = Storage(base["output_dir"]).join(f"{named}-report")
        # one MLflow run for the experiment, the arms' runs nested in it (pipelines/tracking.py)
        with Tracker(LemaConfig.model_validate({**base, "run": named}), where) as parent:
            tracking = {**base["tracking"], "parent_run": parent.run_id, "enabled": parent.run_id is not None}
            runs = experiment({**base, "tracking": tracking}, args.prefix, start_steps, args.epochs,
                              evolve if method == "lora" else None, args.evolve_seeds, method, args.full_lr,
                              not args.no_equal_steps)
            result = summarize(runs)
            result["method"] = method
            result["total_s"] = round(time.perf_counter() - t0, 1)
            report = write_report(result, where)
            parent.log_metrics(result)  # arms' pass@1 and intervals, paired differences, McNemar p
            parent.log_report(report)
        print(f"report: {report}")
        results[method] = headline(result)
    first, *rest = results.values()
    print(json.dumps({**first, **{f"{m}": h for m, h in list(results.items())[1:]}} if rest else first))


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The figures of the last line: the equal-epochs protocol's, and equal steps' in short."""
    out = {k: v for k, v in result.items() if k not in ("equal_epochs", "equal_steps", "wall_s")}
    out["selected_step"] = result["equal_epochs"]["selected_step"]
    out["pass1_last"] = result["equal_epochs"]["pass1_last"]
    equal_steps = result["equal_steps"]
    if equal_steps is not None:
        out["equal_steps"] = {**{f"pass1_{arm}": equal_steps["arms"][arm]["pass1"] for arm in ARMS if arm != "cot"},
                              **headline_diffs(equal_steps), "examples": equal_steps["examples"],
                              "steps": equal_steps["steps"]}
    return out


if __name__ == "__main__":
    main()
