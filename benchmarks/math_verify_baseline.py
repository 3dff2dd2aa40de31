"""math-verify called two ways, so benchmarks report each side by side under its own name."""

from __future__ import annotations

from math_verify import parse, verify


def math_verify_fair(gold: str, prediction: str) -> bool:
    """As math-verify's docs and peer graders call it: the gold answer wrapped in `$...$`."""
    return bool(verify(parse(f"${gold}$"), parse(prediction)))


def math_verify_bare(gold: str, prediction: str) -> bool:
    """`verify(parse(gold), parse(prediction))` with a bare gold (parses `2\\sqrt{3}` as 2)."""
    return bool(verify(parse(gold), parse(prediction)))
