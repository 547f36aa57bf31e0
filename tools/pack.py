"""`avparse pack`: LLP-layout features -> one memory-mapped file per split.

    avparse pack --data DIR [--labels DIR] --out STORE [--splits train,val,test]

Every feature file is checked on the way (present, right shape for the
profile, finite); the first problem stops with one line naming file and video.
"""

from __future__ import annotations

import argparse
import sys
import time

from avparse.tools.common import UserError, add_data_args, data_config, fail, user_errors


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avparse pack", description="Pack LLP-layout features into a memory-mapped store.")
    add_data_args(p)
    p.add_argument("--out", required=True, metavar="STORE", help="folder for <split>.bin + <split>.json")
    p.add_argument("--splits", default=None,
                   help="comma-separated splits (default: each of train,val,test whose CSV exists)")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from avparse.train.dataset import csv_dir
        from avparse.train.llp import LLP_FILES
        from avparse.train.pack import pack_split

        cfg = data_config(args)
        if args.splits:
            splits = [s.strip() for s in args.splits.split(",") if s.strip()]
            bad = [s for s in splits if s not in ("train", "val", "test")]
            if bad:
                raise UserError(f"--splits: unknown split {bad[0]!r}; use train, val, test")
        else:
            splits = [s for s in ("train", "val", "test") if (csv_dir(cfg, LLP_FILES[s]) / LLP_FILES[s]).is_file()]
            missing = [s for s in ("train", "val", "test") if s not in splits]
            if not splits:
                raise UserError(f"no LLP CSV files found for {args.data}; give --labels DIR")
            if missing:
                print(f"note: no CSV for {', '.join(missing)}: packing {', '.join(splits)}", file=sys.stderr)
        for s in splits:
            t0 = time.perf_counter()
            last = [0.0]

            def progress(i, n, s=s):
                now = time.perf_counter()
                if not args.quiet and sys.stderr.isatty() and (now - last[0] > 0.2 or i == n):
                    sys.stderr.write(f"\r{s}: {i}/{n} videos")
                    sys.stderr.flush()
                    last[0] = now

            idx = pack_split(cfg, s, args.out, progress=progress)
            if not args.quiet and sys.stderr.isatty():
                sys.stderr.write("\r\033[K")
            size = idx.with_suffix(".bin").stat().st_size
            print(f"{s}: {idx.with_suffix('.bin')} ({size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s")
    except user_errors() as e:
        return fail(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
