"""avparse: live audio-visual event parsing (the HAN of Tian, Li, Xu, ECCV 2020).

    import avparse
    parser = avparse.load("demo")            # a registry name ("demo", "llp") or a checkpoint path
    segments = parser.parse("clip.mp4")      # typed segments: label, modality, onset, offset, score
    for event in parser.stream(camera=0, mic="default"):
        ...                                  # typed events as they are decided; break stops it

Everything else is reachable by its package path: ``avparse.core`` (model,
extractors, registry), ``avparse.stream`` (the live runtime), ``avparse.train``,
``avparse.tools`` (the command).

Why this file is in ``tools/top-level/``: the repository keeps four folders at
the top (core, stream, train, tools), installed as ``avparse.core``,
``avparse.stream``, ``avparse.train`` and ``avparse.tools`` by setuptools'
``package-dir`` (pyproject.toml); the top-level package ``avparse`` needs a
folder too, and setuptools maps it here. Its API wires core (models,
extractors) and stream (sources, runtime) together, which only tools may do,
so it belongs with tools; the implementation is ``avparse.tools.api``. The
folder's name is not a Python identifier on purpose: in an editable install
``tools/`` is ``avparse.tools`` and a plain name would make this file
importable a second time as ``avparse.tools.<name>``; a wheel has no such
copy, and so the two installs import the same way.

Importing avparse has no side effects and imports neither torch nor numpy:
the names below load ``avparse.tools.api`` on first use.
"""

__version__ = "0.1.0"  # the one place of the version (pyproject.toml reads it)

__all__ = ["load", "available_models", "Parser", "EventStream", "Event", "Segment", "ModelError", "__version__"]


def available_models() -> list:
    """The names ``load`` accepts besides checkpoint paths (``avparse models`` describes them)."""
    from avparse.core.registry import MODELS

    return list(MODELS)


def __getattr__(name):
    if name in ("load", "Parser", "EventStream", "ModelError"):
        from avparse.tools import api

        return getattr(api, name)
    if name in ("Event", "Segment"):
        from avparse.core import events

        return getattr(events, name)
    raise AttributeError(f"module 'avparse' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
