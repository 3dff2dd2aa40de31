#!/usr/bin/env bash
# Regenerates requirements/image.lock, the pinned packages the image installs (Dockerfile):
# lema's dependencies with the gpu extra (not lema itself), for Linux x86_64 and CPython 3.11,
# the platform of FROM rayproject/ray:2.60.0-py311-gpu. From anywhere:
#   scripts/lock_image.sh                 # needs uv (pip install uv, any venv; it reads metadata, no wheels)
#   scripts/lock_image.sh --upgrade       # uv keeps the lock's pins where they still fit; this takes the newest
#   UV=/path/to/uv scripts/lock_image.sh  # another uv
# Then run pytest tests/test_dependencies.py, which checks the lock against pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-uv}
command -v "$UV" >/dev/null || { echo "uv not found: pip install uv (or set UV=/path/to/uv)" >&2; exit 1; }
LOCK=requirements/image.lock
"$UV" pip compile pyproject.toml --extra gpu --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    -o "$LOCK" "$@" >/dev/null
BODY=$(cat "$LOCK")
{
    echo "# The image's packages (Dockerfile: pip install -r $LOCK, then lema with --no-deps)."
    echo "# Regenerate with scripts/lock_image.sh ($("$UV" --version | cut -d' ' -f1,2)), which runs the command below."
    echo "$BODY"
} >"$LOCK"
