"""One clear line for user errors: the subcommands' shared error handling."""

from __future__ import annotations

import sys


class UserError(Exception):
    """An error the user can fix: printed as one line, exit status ``code``."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 2) -> int:
    print(f"avparse: error: {message}", file=sys.stderr)
    return code


def run_main(build_parser, body, argv=None) -> int:
    """A subcommand's ``main``: parse ``argv`` with ``build_parser()``, run ``body(args)``, and turn
    a UserError into its one line and exit status."""
    args = build_parser().parse_args(argv)
    try:
        return body(args)
    except UserError as e:
        return fail(str(e), e.code)


def model_path(arg: str | None, demo_name: str = "demo.pt"):
    """The checkpoint a subcommand runs: ``--model`` if given, else the bundled demo model
    (``demo_name`` in avparse.core's assets). Missing files are a UserError (one line)."""
    from importlib.resources import files
    from pathlib import Path

    if arg:
        path = Path(arg)
        if not path.is_file():
            raise UserError(f"{arg}: no such checkpoint file; pass --model with a checkpoint written by avparse train")
        return path
    demo = Path(str(files("avparse.core") / "assets" / demo_name))
    if not demo.is_file():
        raise UserError(f"the bundled demo model is missing ({demo}); rebuild it with `avparse bundle` "
                        f"or pass --model CKPT")
    return demo
