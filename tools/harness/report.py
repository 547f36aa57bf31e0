"""The one report writer of the harnesses: results as JSON (any dataclass, path or numpy value
made plain), and the JSON + Markdown pair of a results folder."""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from pathlib import Path


def json_default(o):
    """For json.dumps: paths and other objects as text, dataclasses as dicts, numpy scalars as numbers."""
    if isinstance(o, Path):
        return str(o)
    if is_dataclass(o) and not isinstance(o, type):
        return asdict(o)
    if hasattr(o, "item") and callable(o.item):
        try:
            return o.item()
        except (TypeError, ValueError):
            pass
    return str(o)


def plain(obj):
    """``obj`` as plain JSON types (what writing and reading it back gives)."""
    return json.loads(json.dumps(obj, default=json_default))


def write_json(path, obj) -> Path:
    """``obj`` as indented JSON at ``path`` (folders made); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=json_default) + "\n")
    return path


def write_results(folder, res: dict, markdown: str) -> tuple[Path, Path]:
    """``folder/results.json`` and ``folder/results.md``; returns both paths."""
    folder = Path(folder)
    j = write_json(folder / "results.json", res)
    m = folder / "results.md"
    m.write_text(markdown)
    return j, m
