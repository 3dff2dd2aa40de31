"""Correction-centric question evolution (LeMa §2.2): seeds -> new questions -> majority labels.

Pure library code (no Ray). Seeds are drawn with replacement from the questions of verified
corrections (`select_seeds`); each draw gets one new question, written by a strong model from
the `evolve` prompt (`parse_created_question` reads it strictly) or, for synthetic problems,
by the reference evolver (right by construction, exact labels). A model's question is labelled
by the majority of `votes` answers to the CoT prompt (`label_by_majority`), once new questions
that are near-duplicates of their seed, of each other or of an eval question are dropped
(`NearDuplicates`). Every seed ends as a new Problem (origin "evolved") or a reject with its
reason; an engine failure is a reject, never an exception.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Hashable, Iterable
from typing import Any

from lema.config import EvolveConfig
from lema.engines import EngineError, RequestOutput
from lema.records import Problem, stable_id

EVOLVE_PROMPT = "evolve"
CREATED_MARKER = "#Created Question#:"
ORIGIN = "evolved"
REFERENCE_CHANGES = ("numbers", "add_step", "change_step", "combine")
"""The reference evolver's changes; each also draws new numbers."""
MIN_WORDS, MAX_CHARS = 8, 2000  # a sane length for a created question
REQUIRED_SEED_FIELDS = ("id", "question")

_MARKER = re.compile(r"^[ \t>*_]*#\s*Created\s+Question\s*#\s*:?[ \t*_]*", re.IGNORECASE | re.MULTILINE)
_LEFTOVER = re.compile(r"#\s*Given\s+Question\s*#|\{question\}|[<\[]\s*(?:your|the new|new|insert)\b",
                       re.IGNORECASE)
_SOLUTION_LINE = re.compile(r"^[ \t*_#]*(?:answer|solution|final answer|the answer is|step 1|hint)\b\s*[:.*]",
                            re.IGNORECASE | re.MULTILINE)
_ASK = re.compile(r"^(?:find|compute|calculate|determine|evaluate|express|simplify|what|how|give|solve)\b",
                  re.IGNORECASE)


# ---------------------------------------------------------------- seeds
def select_seeds(
    correction_question_ids: list[str],
    all_question_ids: list[str],
    n: int,
    strategy: str = "correction_centric",
    seed: int = 0,
) -> list[str]:
    """Draw `n` seed question ids with replacement; position i in the result is draw index i.

    Args:
        correction_question_ids: one entry per verified correction (repeats weight a question).
        all_question_ids: every training question (the `general` control draws from these).
        n: how many draws.
        strategy: `correction_centric` (weighted by corrections) or `general` (uniform).
        seed: the draws' seed; the same inputs in any order give the same draws.
    Returns:
        The drawn ids (empty when there is nothing to draw from).
    """
    if strategy == "correction_centric":
        pool = sorted(correction_question_ids)
    elif strategy == "general":
        pool = sorted(set(all_question_ids))
    else:
        raise ValueError(f"strategy {strategy!r} is not one of correction_centric, general")
    if not pool or n <= 0:
        return []
    return random.Random(f"{seed}/{strategy}").choices(pool, k=n)


def seed_rows(draws: list[str], problems: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The seeds `evolve_questions` takes: each drawn problem's dict with its draw index as `draw`
    (a question drawn twice appears twice, with two draw indices)."""
    return [{**problems[pid], "draw": i} for i, pid in enumerate(draws) if pid in problems]


def evolved_id(seed_id: str, draw: int) -> str:
    """The id of the new question grown from one draw of a seed (stable across runs)."""
    return f"evolved-{stable_id(seed_id, draw, length=12)}"


# ---------------------------------------------------------------- the model's reply
def evolve_messages(question: str) -> list[dict[str, str]]:
    """Chat messages asking the evolver for one new question from `question`."""
    from lema.prompts import load_prompt

    return load_prompt(EVOLVE_PROMPT).render(question=question.strip())


def _plain(text: str) -> str:
    return " ".join(text.lower().split())


def parse_created_question(reply: str, seed_question: str | None = None) -> tuple[str | None, str | None]:
    """The new question in an evolver reply, read strictly.

    Returns:
        (question, None), or (None, reason) for a malformed reply: no marker or more than one,
        an empty, too short or too long question, leftover template text, a solution or answer
        in it, no question asked (no "?" or "Find/Compute/..."), or the seed itself.
    """
    marks = list(_MARKER.finditer(reply or ""))
    if not marks:
        return None, "no #Created Question# marker"
    if len(marks) > 1:
        return None, f"more than one created question: {len(marks)} markers"
    question = reply[marks[0].end():].strip().strip("*_\"'").strip()
    if not question:
        return None, "empty question"
    if len(question.split()) < MIN_WORDS:
        return None, f"question too short: {len(question.split())} words, at least {MIN_WORDS}"
    if len(question) > MAX_CHARS:
        return None, f"question too long: {len(question)} characters, at most {MAX_CHARS}"
    if (m := _LEFTOVER.search(question)) is not None:
        return None, f"leftover template text: {m.group(0)!r}"
    if (m := _SOLUTION_LINE.search(question)) is not None:
        return None, f"includes a solution or answer: {m.group(0).strip()!r}"
    last = re.split(r"(?<=[.!?])\s+", question)[-1]
    if not question.endswith("?") and not _ASK.match(last):
        return None, f"no question asked: ends {question[-40:]!r}"
    if seed_question is not None and _plain(question) == _plain(seed_question):
        return None, "same as the seed"
    return question, None


# ---------------------------------------------------------------- labels
def label_by_majority(answers: list[str | None], dataset: str = "gsm8k") -> tuple[str | None, str | None]:
    """The label of a new question from its votes' extracted answers.

    Answers are grouped by equivalence under our grader (`lema.grading.answers_equal`, so "0.5"
    and "1/2" are one answer, as are equal normal forms); the most common group wins if it has at least 2 votes and no
    other group as many, and its answer is a number (the prompt asks for one).

    Returns:
        (label as first voted, normalised; None) or (None, why it was dropped).
    """
    from lema.answer_extraction import normalize_answer, parse_number
    from lema.grading import answers_equal

    given = [a.strip() for a in answers if a is not None and a.strip()]
    if not given:
        return None, f"no answer in any of {len(answers)} votes"

    def same(a: str, b: str) -> bool:  # equal normal forms count too (two equal words, say)
        return normalize_answer(a, dataset) == normalize_answer(b, dataset) or answers_equal(a, b, dataset)

    groups: list[list[str]] = []
    for answer in given:
        group = next((g for g in groups if same(answer, g[0])), None)
        if group is None:
            groups.append([answer])
        else:
            group.append(answer)
    sizes = sorted((len(g) for g in groups), reverse=True)
    if sizes[0] < 2:
        return None, f"votes disagree: {given}"
    if len(sizes) > 1 and sizes[1] == sizes[0]:
        return None, f"votes tie: {given}"
    label = normalize_answer(max(groups, key=len)[0], dataset)
    if parse_number(label) is None:
        return None, f"label is not a number: {label!r}"
    return label, None


# ---------------------------------------------------------------- near-duplicates
def word_ngrams(text: str, n: int) -> set[Hashable]:
    """The word n-grams of `text` as the data stage's decontamination reads them (lowercase
    words; a text shorter than n words is one n-gram)."""
    from lema.training_data import _ngrams, _words

    words = _words(text)
    return set(_ngrams(words, min(n, len(words)))) if words else set()


class NearDuplicates:
    """Texts held as word n-gram sets; `similar(text)` is the largest Jaccard similarity of
    `text` with any of them, `text in self` whether it reaches the threshold."""

    def __init__(self, texts: Iterable[str], n: int, threshold: float):
        self.n, self.threshold = n, threshold
        self._sizes: list[int] = []
        self._index: dict[Hashable, list[int]] = {}  # n-gram -> the texts holding it
        for text in texts:
            self.add(text)

    def add(self, text: str) -> None:
        grams = word_ngrams(text, self.n)
        for g in grams:
            self._index.setdefault(g, []).append(len(self._sizes))
        self._sizes.append(len(grams))

    def similar(self, text: str) -> float:
        grams = word_ngrams(text, self.n)
        shared = Counter(i for g in grams for i in self._index.get(g, ()))
        return max((k / (len(grams) + self._sizes[i] - k) for i, k in shared.items()), default=0.0)

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and self.similar(text) >= self.threshold

    def __len__(self) -> int:
        return len(self._sizes)


def drop_near_duplicates(
    problems: list[dict[str, Any]],
    seed_questions: dict[str, str],
    eval_questions: NearDuplicates,
    n: int,
    threshold: float,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Drop new questions that are near-duplicates of their seed, of an eval question, or of a
    new question before them (ordered by draw, then id).

    Args:
        problems: new Problem dicts (with `seed_id` and `draw`).
        seed_questions: seed id -> its question.
        eval_questions: the eval questions' `NearDuplicates`.
    Returns:
        (kept, rejects).
    """
    kept: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    earlier = NearDuplicates([], n, threshold)
    for p in sorted(problems, key=lambda p: (p.get("draw", 0), p["id"])):
        seed = NearDuplicates([seed_questions.get(p["seed_id"], "")], n, threshold)
        why = ("near-duplicate of its seed" if p["question"] in seed else
               "near-duplicate of an eval question" if p["question"] in eval_questions else
               "near-duplicate of another new question" if p["question"] in earlier else None)
        if why:
            rejects.append(_reject(p["seed_id"], p.get("draw", 0), "dedup", why, raw=p["question"]))
        else:
            earlier.add(p["question"])
            kept.append(p)
    return kept, rejects


# ---------------------------------------------------------------- the reference evolver
def reference_evolve(seed: dict[str, Any], partner: dict[str, Any] | None, rng_seed: int = 0) -> Problem:
    """A new synthetic problem from a seed, right by construction: new numbers, and (drawn) a
    step added, a step changed, or the partner seed's steps appended (`REFERENCE_CHANGES`).

    Args:
        seed: a synthetic Problem dict with its `draw` index.
        partner: another seed to combine with (None: no combining).
        rng_seed: mixed with (seed id, draw) into the changes' seed.
    Raises:
        ValueError: the seed is not a synthetic question, or no change gave a new question.
    """
    from lema.synthetic import OPERATIONS, chain_problem, draw_chain, read_chain

    chain = read_chain(seed["question"])
    if chain is None:
        raise ValueError("not a synthetic question")
    other = read_chain(partner["question"]) if partner and partner["id"] != seed["id"] else None
    rng = random.Random(f"{rng_seed}/{seed['id']}/{seed['draw']}")
    kinds = [k for k, _, _ in chain.ops]
    for _ in range(10):
        change = rng.choice(REFERENCE_CHANGES if other else REFERENCE_CHANGES[:3])
        new = list(kinds)
        if change == "add_step":
            new.insert(rng.randint(0, len(new)), rng.randrange(OPERATIONS))
        elif change == "change_step":
            i = rng.randrange(len(new))
            new[i] = rng.choice([k for k in range(OPERATIONS) if k != new[i]])
        elif change == "combine" and other is not None:
            new += [k for k, _, _ in other.ops]
        drawn = draw_chain(rng, chain.name, chain.item, rng.randint(5, 60), new)
        problem = chain_problem(drawn, evolved_id(seed["id"], seed["draw"]), seed.get("split") or "train")
        if _plain(problem.question) != _plain(seed["question"]):
            problem.origin, problem.seed_id = ORIGIN, seed["id"]
            return problem
    raise ValueError("no change gave a new question")


# ---------------------------------------------------------------- the stage's work
def evolve_questions(
    seeds: list[dict[str, Any]],
    cfg: EvolveConfig,
    engine: Any | None = None,
    eval_questions: Iterable[str] = (),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """One new question per seed: written, parsed, checked for near-duplicates, then labelled.

    Near-duplicates are dropped before the votes are asked for, so they cost no labelling.

    Args:
        seeds: Problem dicts with `draw` (see `seed_rows`); near-duplicates among the new
            questions are found within this list, so pass a whole selection at once.
        cfg: the evolve config (evolver, sampling, votes, near-duplicate settings).
        engine: an `lema.engines.Engine` for the llm evolver (None for reference).
        eval_questions: questions of every eval set (new questions near them are dropped).
    Returns:
        (new Problem dicts with origin "evolved", seed_id and draw; rejects, each with seed_id,
        draw, stage (input, write, parse, dedup, label), reason and the raw text; counts: seeds,
        generated (replies), parsed, distinct (after near-duplicates), kept (labelled), dropped
        by reason, tokens, cost).
    """
    rejects: list[dict[str, Any]] = []
    valid = []
    for s in seeds:
        missing = [k for k in REQUIRED_SEED_FIELDS if not isinstance(s.get(k), str) or not s.get(k)]
        missing += [] if isinstance(s.get("draw"), int) else ["draw"]
        if missing:
            rejects.append(_reject(str(s.get("id")), s.get("draw"), "input", f"missing {', '.join(missing)}"))
        else:
            valid.append(s)
    if cfg.evolver == "llm" and engine is None:
        raise ValueError("the llm evolver needs an engine")
    usage = (0, 0.0)
    if cfg.evolver == "reference":
        written, more = _reference(valid, cfg)
        generated = len(written)
    else:
        written, more, usage, generated = _write(valid, cfg, engine)
    rejects += more
    distinct, more = drop_near_duplicates(written, {s["id"]: s["question"] for s in valid},
                                          NearDuplicates(eval_questions, cfg.dedup_ngram, cfg.dedup_threshold),
                                          cfg.dedup_ngram, cfg.dedup_threshold)
    rejects += more
    kept = distinct
    if cfg.evolver == "llm":
        kept, more, (tokens, cost) = _label(distinct, cfg, engine)
        rejects += more
        usage = (usage[0] + tokens, usage[1] + cost)
    counts = {
        "seeds": len(seeds), "generated": generated, "parsed": len(written), "distinct": len(distinct),
        "kept": len(kept), "dropped": dict(Counter(r["reason"].split(":")[0] for r in rejects)),
        "tokens": usage[0], "cost": round(usage[1], 6),
    }
    return kept, rejects, counts


def _reference(seeds: list[dict[str, Any]], cfg: EvolveConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(new problem dicts, rejects) from the reference evolver; a seed's combine partner is drawn
    from the seeds given."""
    out, rejects = [], []
    for s in seeds:
        rng = random.Random(f"{cfg.seed}/partner/{s['id']}/{s['draw']}")
        partner = rng.choice(seeds) if len(seeds) > 1 else None
        try:
            problem = reference_evolve(s, partner, cfg.seed)
        except ValueError as e:
            rejects.append(_reject(s["id"], s["draw"], "write", str(e)))
            continue
        out.append({**problem.to_dict(), "draw": s["draw"]})
    return out, rejects


def _write(seeds: list[dict[str, Any]], cfg: EvolveConfig, engine: Any):
    """Ask the engine for one new question per seed and parse each strictly: (new problem dicts
    without an answer yet, rejects, (tokens, cost), replies received)."""
    from lema.sampling import request_seed

    sampling = cfg.write_sampling
    outputs = _generate(engine, [evolve_messages(s["question"]) for s in seeds], sampling,
                        [request_seed(sampling.seed, f"{s['id']}/{s['draw']}") for s in seeds])
    written, rejects = [], []
    for s, out in zip(seeds, outputs):
        if out.error is not None or not out.completions:
            rejects.append(_reject(s["id"], s["draw"], "write", f"engine: {out.error or 'no reply'}"))
            continue
        reply = out.completions[0]
        question, reason = parse_created_question(reply.text, s["question"])
        if reply.finish_reason == "length":
            question, reason = None, f"reply cut at max_tokens: {sampling.max_tokens}"
        if question is None:
            rejects.append(_reject(s["id"], s["draw"], "parse", reason or "", raw=reply.text))
            continue
        problem = Problem(id=evolved_id(s["id"], s["draw"]), dataset=s.get("dataset") or "gsm8k",
                          split=s.get("split") or "train", question=question, answer="", origin=ORIGIN,
                          seed_id=s["id"])
        written.append({**problem.to_dict(), "draw": s["draw"]})
    replies = sum(o.error is None and bool(o.completions) for o in outputs)
    return written, rejects, _usage(outputs), replies


def _label(problems: list[dict[str, Any]], cfg: EvolveConfig, engine: Any):
    """Ask `votes` CoT answers per new question and label it by their majority: (labelled
    problem dicts, rejects, (tokens, cost))."""
    from lema.answer_extraction import extract_answer
    from lema.prompts import build_cot_messages
    from lema.sampling import request_seed
    from lema.sources import grading_dataset

    sampling = cfg.answer_sampling.model_copy(update={"n": cfg.votes})
    outputs = _generate(engine, [build_cot_messages(p["question"]) for p in problems], sampling,
                        [request_seed(sampling.seed, p["id"]) for p in problems])
    labelled, rejects = [], []
    for p, out in zip(problems, outputs):
        dataset = grading_dataset(p["dataset"])
        if out.error is not None or not out.completions:
            rejects.append(_reject(p["seed_id"], p["draw"], "label", f"engine: {out.error or 'no reply'}",
                                   raw=p["question"]))
            continue
        label, reason = label_by_majority([extract_answer(c.text, dataset) for c in out.completions], dataset)
        if label is None:
            rejects.append(_reject(p["seed_id"], p["draw"], "label", reason or "", raw=p["question"]))
        else:
            labelled.append({**p, "answer": label})
    return labelled, rejects, _usage(outputs)


def _generate(engine: Any, requests: list, sampling: Any, seeds: list[int | None]) -> list[RequestOutput]:
    """`engine.generate`, with a dead engine's error given to every request instead of raised."""
    if not requests:
        return []
    try:
        return engine.generate(requests, sampling, seeds=seeds)
    except EngineError as e:
        return [RequestOutput(error=f"{type(e).__name__}: {e}") for _ in requests]


def _usage(outputs: list[RequestOutput]) -> tuple[int, float]:
    return (sum(o.prompt_tokens + sum(c.tokens for c in o.completions) for o in outputs),
            sum(o.cost for o in outputs))


def _reject(seed_id: str, draw: Any, stage: str, reason: str, raw: str = "") -> dict[str, Any]:
    return {"seed_id": seed_id, "draw": draw, "stage": stage, "reason": reason, "raw": raw}
