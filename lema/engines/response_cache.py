"""An on-disk cache of API responses: one JSON file per request key, written atomically.

The key is the sha256 of everything that decides the answer (model, messages, sampling
settings, JSON schema), so a re-run of the same request is served from disk and paid once.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from lema.config import SamplingConfig
from lema.engines import Completion, Messages, RequestOutput


def request_key(
    model: str, messages: Messages, sampling: SamplingConfig, json_schema: dict | None
) -> str:
    """sha256 hex of the request's answer-deciding fields (stable across runs and machines)."""
    payload = {
        "model": model,
        "messages": messages,
        "sampling": {  # named fields: a new SamplingConfig field must not void old caches
            "n": sampling.n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "stop": list(sampling.stop),
            "seed": sampling.seed,
        },
        "json_schema": json_schema,
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """Files `<root>/<key[:2]>/<key>.json` holding completions and prompt tokens."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> RequestOutput | None:
        """The cached output (cached=True, cost 0), or None when absent or unreadable."""
        try:
            data = json.loads(self._path(key).read_text())
            completions = [Completion(**c) for c in data["completions"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return RequestOutput(
            completions=completions, prompt_tokens=data.get("prompt_tokens", 0), cached=True
        )

    def put(self, key: str, output: RequestOutput) -> None:
        """Store a successful output (write to a temp file, then rename: readers never see
        half a file, and concurrent writers of one key leave one whole file)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "completions": [vars(c) for c in output.completions],
            "prompt_tokens": output.prompt_tokens,
        }
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:8]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
