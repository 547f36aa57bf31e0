#!/usr/bin/env bash
# Runs the whole test suite, the slow tests included (`-m ""` undoes the
# `-m 'not slow'` that pyproject.toml gives a plain `pytest`). Tests that need
# a display start their own Xvfb; tests that need PulseAudio start their own daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -q -m "" "$@"
