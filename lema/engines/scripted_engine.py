"""The scripted backend: a null engine that replies by rule, without a model.

It measures the pipeline's own cost at scale, and serves tests where a model adds only time.
A request is read from its last user turn: the text after "Question:" is the question, and a
"Solution:" or "Original Solution:" section after it (the corrector prompts) makes it a
corrector request; any other request is a CoT request.

- CoT request, synthetic question (`lema.synthetic.solve_question` reads it): the worked steps
  as "Step k: ..." lines (the gold steps' text) and "The answer is X."; right with probability
  `scripted.p_correct`, else one step gets a wrong value that the later steps carry on to a
  wrong answer.
- CoT request, any other question: two steps ending in a random number (mostly wrong).
- Corrector request, synthetic question: the reference corrector's reply (the first wrong step,
  why, the gold steps from there on), so it parses and verifies. Any other question: a reply
  that redoes a random step with a random answer (parses; mostly not verified).
  Corrections are written in the prompt's layout (`paper` for "Original Solution:"), or as the
  JSON object of `CORRECTION_JSON_SCHEMA` when a `json_schema` is given.

Each completion draws from its own `random.Random`, seeded with a SHA-256 of (request seed,
sample index, request): the same request and seed give the same replies, and each of the `n`
samples draws its own. Tokens are whitespace-separated words (prompt: the words of all
messages); a reply longer than `max_tokens` words is cut there with finish_reason "length".
Temperature, top_p and stop strings are not applied.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
import time

from lema.config import EngineConfig, SamplingConfig
from lema.correction import ParsedCorrection, format_correction_reply, parse_correction
from lema.engines import Completion, Messages, RequestOutput, add_output_stats, new_stats
from lema.prompts import ANSWER_LINE, format_numbered, number_steps
from lema.reference_corrector import reference_correction
from lema.synthetic import solve_question

_SOLUTION = re.compile(r"\n[ \t]*(Original )?Solution:[ \t]*\n(.*?)(?:\n\s*\nReply\b.*)?\Z", re.DOTALL)


def read_request(messages: Messages) -> tuple[str, str | None, str]:
    """(question, the solution to correct or None for a CoT request, its layout: lema | paper)."""
    text = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    rest = text.rpartition("Question:")[2]
    m = _SOLUTION.search(rest)
    if m is None:
        return rest.split("\nAnswer:")[0].strip(), None, "lema"
    return rest[: m.start()].strip(), m[2].strip(), "paper" if m[1] else "lema"


def _with_answer(steps: list[str], answer: int) -> str:
    return format_numbered(steps) + "\n" + ANSWER_LINE.format(answer=answer)


def solve(question: str, p_correct: float, rng: random.Random) -> str:
    """A CoT reply to `question` (see the module docstring)."""
    gold = solve_question(question)
    if gold is None:
        guess = rng.randint(1, 1000)
        return _with_answer(["Take the numbers given in the question.", f"Combining them gives {guess}."], guess)
    steps = gold if rng.random() < p_correct else _mistaken(question, gold, rng)
    return _with_answer([text for text, _ in steps], steps[-1][1])


def _mistaken(question: str, gold: list[tuple[str, int]], rng: random.Random) -> list[tuple[str, int]]:
    """The worked steps with one drawn step off by a drawn error; the error grows until the final
    answer is wrong (a later "keeps one of k groups" can round a small one away)."""
    step = rng.randrange(len(gold))
    tries = (solve_question(question, mistake=(step, error)) for error in itertools.count(rng.randint(1, 9)))
    return next(steps for steps in tries if steps is not None and steps[-1][1] != gold[-1][1])


def correct(question: str, solution: str, layout: str, as_json: bool, rng: random.Random) -> str:
    """A corrector reply for `solution` (see the module docstring)."""
    gold = solve_question(question)
    steps = number_steps(solution)
    if gold is not None and steps:
        reply = reference_correction([text for text, _ in gold], str(gold[-1][1]), solution)
        parsed = parse_correction(reply, solution, "synthetic")
        assert isinstance(parsed, ParsedCorrection), parsed  # the reference writes the parsed format
        k, explanation, corrected, answer = (parsed.incorrect_step, parsed.explanation,
                                             parsed.corrected_solution, gold[-1][1])
    else:
        k, answer = rng.randint(1, max(1, len(steps))), rng.randint(1, 1000)
        explanation = f"Step {k} gets a wrong value."
        corrected = _with_answer([*steps[: k - 1], f"Redoing this step gives {answer}."], answer)
    if as_json:
        return json.dumps({"incorrect_step": k, "explanation": explanation,
                           "corrected_solution": corrected, "final_answer": str(answer)})
    return format_correction_reply(k, explanation, corrected, layout)


def _truncate(text: str, max_tokens: int) -> Completion:
    """`text` as a completion of at most `max_tokens` whitespace-separated words."""
    words = list(re.finditer(r"\S+", text))
    if len(words) <= max_tokens:
        return Completion(text=text, tokens=len(words), finish_reason="stop")
    return Completion(text=text[: words[max_tokens - 1].end()], tokens=max_tokens, finish_reason="length")


class ScriptedEngine:
    """`Engine` that replies by rule (see the module docstring and lema.engines.Engine)."""

    def __init__(self, cfg: EngineConfig):
        self.name = cfg.label
        self.p_correct = cfg.scripted.p_correct
        self._stats = new_stats()

    def generate(
        self,
        requests: list[Messages],
        sampling: SamplingConfig,
        json_schema: dict | None = None,
        seeds: list[int | None] | None = None,
    ) -> list[RequestOutput]:
        """See `Engine.generate`; a `json_schema` makes corrector replies JSON."""
        start = time.perf_counter()
        seeds = seeds if seeds is not None else [sampling.seed] * len(requests)
        outputs = [
            RequestOutput(
                completions=[_truncate(self._reply(messages, seed, i, json_schema is not None), sampling.max_tokens)
                             for i in range(sampling.n)],
                prompt_tokens=sum(len(m["content"].split()) for m in messages),
            )
            for messages, seed in zip(requests, seeds)
        ]
        add_output_stats(self._stats, outputs, time.perf_counter() - start)
        return outputs

    def _reply(self, messages: Messages, seed: int | None, index: int, as_json: bool) -> str:
        key = json.dumps([seed, index, messages], sort_keys=True)
        rng = random.Random(hashlib.sha256(key.encode()).digest())
        question, solution, layout = read_request(messages)
        if solution is None:
            return solve(question, self.p_correct, rng)
        return correct(question, solution, layout, as_json, rng)

    def stats(self) -> dict[str, float]:
        return dict(self._stats)

    def close(self) -> None:
        """Nothing to release."""
