#!/usr/bin/env bash
# Installs what avparse needs on a fresh Debian machine: system packages
# (FFmpeg, PortAudio, PulseAudio for the microphone tests, Xvfb for the demo
# window) and a virtual environment in .venv with the pinned torch.
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
command -v pulseaudio >/dev/null || need_apt+=(pulseaudio pulseaudio-utils libasound2-plugins)
ldconfig -p | grep -q libportaudio || need_apt+=(libportaudio2)
command -v Xvfb >/dev/null || need_apt+=(xvfb x11-utils)
ldconfig -p | grep -q libGL.so.1 || need_apt+=(libgl1 libglib2.0-0)
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# pip warns about every local index folder it skips: keep the log readable.
pipq() { .venv/bin/python -m pip "$@" > >(grep -v "is neither a file nor a directory" || true) 2>&1; }
pipq install -q --upgrade pip
# The pinned torch first, so that nothing pulls a different build.
pipq install -q "torch==2.14.1" "torchvision==0.29.1"
pipq install -q -e ".[test]"
echo "avparse: set-up done (.venv)"
