"""Shared test fixtures: where ../shared is, and skipping when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "llp").is_dir():
        pytest.skip(f"../shared is absent ({SHARED}): the real LLP files are needed")
    return SHARED


@pytest.fixture(scope="session")
def llp_dir(shared_dir) -> Path:
    return shared_dir / "llp"


@pytest.fixture(scope="session")
def llp_clip(shared_dir) -> Path:
    p = shared_dir / "media" / "BjCEufrlXm4.mp4"
    if not p.is_file():
        pytest.skip(f"{p} is absent")
    return p
