"""`avparse models`: the named models, their files, what is cached and where.

    avparse models                     every model: what it is, profile, classes, files and their state
    avparse models llp --fetch         download (or find) and verify llp's files now
    avparse models llp --verify        check the cached files against their checksums now

A name here is what ``--model NAME`` and ``avparse.load(NAME)`` accept; the
registry is ``avparse.core.registry``. Files live in the torch hub cache
(``$TORCH_HOME/hub/checkpoints``); ``--mirror URL`` (or ``AVPARSE_MIRROR``)
downloads them from a mirror as ``URL/<file name>`` (the listing shows the
address each missing file would come from), ``--offline`` (or
``AVPARSE_OFFLINE=1``) never downloads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import UserError, mirror_option, run_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avparse models", description=__doc__.split("\n\n")[0])
    p.add_argument("name", nargs="?", help="one model (default: all)")
    p.add_argument("--fetch", action="store_true", help="download what is missing and verify every file now")
    p.add_argument("--verify", action="store_true", help="check the files already on disk against their checksums")
    p.add_argument("--profile", default=None, help="the feature profile whose files to list or fetch (e.g. paper-pca)")
    p.add_argument("--offline", action="store_true", default=None, help="never download (also AVPARSE_OFFLINE=1)")
    p.add_argument("--mirror", default=None, metavar="URL",
                   help="base address serving the files by name (URL/<file name>) for networks that cannot reach "
                        "the original hosts (also AVPARSE_MIRROR)")
    p.add_argument("--notes", action="store_true", help="also print each model's notes (input contract, evidence)")
    return p


def main(argv=None) -> int:
    return run_main(build_parser, _run_to_stdout, argv)


def _run_to_stdout(args) -> int:
    try:
        return _run(args)
    except BrokenPipeError:  # `avparse models | head`: the reader left; not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


def _mirror(args) -> tuple[str | None, str]:
    """(the mirror in effect, where it was set): --mirror, else AVPARSE_MIRROR, else (None, "")."""
    from avparse.core import hub

    if args.mirror is not None:
        return mirror_option(args.mirror), "--mirror"
    env = hub.mirror_default()
    if not env:
        return None, ""
    try:
        return hub.check_mirror(env), "AVPARSE_MIRROR"
    except ValueError as e:
        return None, f"AVPARSE_MIRROR {e}; downloads fail until it is fixed"


def _state(f, dirs, *, verify: bool, mirror: str | None = None) -> tuple[str, str]:
    """(state, where) of a published file: cached/verified, cached/unchecked, refused, or missing."""
    from avparse.core import hub

    for d in list(dirs) + [hub.cache_dir()]:
        p = Path(d) / f.name
        if p.is_file():
            if hub.was_verified(p, f):
                return f"cached, verified, {_size(p)}", str(p)
            if verify:
                size = _size(p)
                try:
                    hub.verify(p, f, remove=(Path(d) == hub.cache_dir()))
                except hub.WeightsError as e:
                    return f"REFUSED: {e}", str(p)
                return f"cached, verified now, {size}", str(p)
            return f"cached, not checked yet, {_size(p)}", str(p)
        partial = Path(d) / (f.name + ".partial")
        if partial.is_file():
            return f"partial download, {partial.stat().st_size / 1e6:.1f} of ~{f.approx_mb:.1f} MB", str(partial)
    if mirror:
        return f"missing (~{f.approx_mb:.1f} MB)", f"{hub.source_url(f, mirror)}  (mirror of {f.url})"
    return f"missing (~{f.approx_mb:.1f} MB)", f.url


def _run(args) -> int:
    from avparse.core import hub, registry

    from .api import ModelError, ModelOptions, default_progress, resolve

    if args.name is not None and args.name not in registry.MODELS:
        raise UserError(f"unknown model {args.name!r}; known models: {', '.join(registry.MODELS)}")
    names = [args.name] if args.name else list(registry.MODELS)
    mirror, mirror_from = _mirror(args)
    if args.fetch:
        for name in names:
            try:
                given = mirror if args.mirror is not None else None  # None: hub reads AVPARSE_MIRROR itself
                res = resolve(name, ModelOptions(profile=args.profile, offline=args.offline, mirror=given),
                              progress=default_progress())
            except ModelError as e:
                raise UserError(str(e)) from None
            print(f"avparse models: {name}: ready ({res.path})", file=sys.stderr)
    out = sys.stdout
    offline = "--offline" if args.offline else "AVPARSE_OFFLINE" if hub.offline_default() else ""
    out.write(f"cache: {hub.cache_dir()}\n")
    if offline:
        out.write(f"offline: nothing is downloaded ({offline})\n")
    out.write(f"mirror: {mirror} ({mirror_from}): missing files come from <mirror>/<file name>\n" if mirror else
              f"mirror: {mirror_from}\n" if mirror_from else
              "mirror: none (files come from their published addresses; --mirror URL or AVPARSE_MIRROR sets one)\n")
    out.write("\n")
    for name in names:
        m = registry.MODELS[name]
        default = "  (default)" if name == registry.DEFAULT_MODEL else ""
        out.write(f"{name}{default}: {m.description}\n")
        profiles = m.profile + (f" (or {', '.join(m.profiles)} with --profile)" if m.profiles else "")
        shown = ", ".join(m.classes[:6]) + (", ..." if len(m.classes) > 6 else "")
        out.write(f"  profile  {profiles}\n")
        out.write(f"  classes  {len(m.classes)}: {shown}\n")
        out.write(f"  licence  {m.licence}\n")
        out.write(f"  source   {m.source}\n")
        if m.bundled:
            from importlib.resources import files

            p = Path(str(files("avparse.core") / "assets" / m.bundled))
            state = f"bundled, {_size(p)}" if p.is_file() else "MISSING from the package (avparse bundle)"
            out.write(f"  files    {p}  [{state}]\n")
        for f in m.files(args.profile if args.profile in (m.profile,) + tuple(m.profiles) else None):
            state, where = _state(f, [], verify=args.verify, mirror=mirror)
            out.write(f"  file     {f.name}  [{state}]\n           {where}\n           {f.check}; {f.what}\n")
        if args.notes and m.notes:
            out.write("  notes\n" + "".join(f"    {line}\n" for line in m.notes.splitlines()))
        out.write("\n")
    return 0
