#!/usr/bin/env bash
# Runs the test suite. Tests that need a display start their own Xvfb;
# tests that need PulseAudio start their own daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -q "$@"
