"""`avparse extract`: media files -> features in the LLP layout.

    avparse extract VIDEO_OR_DIR... -o feats/ [--profile paper|paper-pca|lite]
        [--weights DIR] [--backend eager|compile|tensorrt] [--device cpu|cuda]

Resumes: files already in ``feats/snippets.tsv`` are skipped. A file that
cannot be used (no audio, too short, truncated, not media) is reported by name
with its cause and the others go on; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import sys
import time

from avparse.tools.common import fail


def _parser() -> argparse.ArgumentParser:
    from avparse.core.extractors.backends import BACKENDS
    from avparse.core.profiles import PROFILES
    from avparse.train.extract import ExtractConfig as E

    ap = argparse.ArgumentParser(prog="avparse extract", description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", help="media files, or folders whose media files are all extracted")
    ap.add_argument("-o", "--out", required=True, help="output folder (vggish/, res152/, r2plus1d_18/, profile.json, snippets.tsv)")
    ap.add_argument("--profile", default=E.profile, choices=sorted(PROFILES), help=f"feature profile (default: {E.profile})")
    ap.add_argument("--weights", default=E.weights,
                    help="folder holding the published weight files (else the torch hub cache), a lite extractor "
                         "state file, or 'random' for a smoke run with random weights")
    ap.add_argument("--backend", default=E.backend, choices=BACKENDS, help=f"how the networks run (default: {E.backend})")
    ap.add_argument("--device", default=E.device, help=f"torch device, e.g. cpu or cuda (default: {E.device})")
    ap.add_argument("--precision", default=E.precision, choices=("auto", "fp32", "fp16", "bf16"),
                    help="auto: fp32 on the CPU (exact), fp16 on a GPU; bf16: CPU autocast, ~3x faster "
                         "convolutions on CPUs with AMX, features within ~0.5%% of fp32 (default: auto)")
    ap.add_argument("--batch", type=int, default=E.batch_snippets,
                    help=f"snippets per extractor call (default: {E.batch_snippets})")
    ap.add_argument("--audio-framing", default=E.audio_framing, choices=("snippet", "file"),
                    help="audio window of snippet k starts at k*1 s (snippet, as live) or k*0.96 s "
                         "(file: VGGish's whole-file framing, as the LLP features)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


class _Progress:
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def __call__(self, i, n, res) -> None:
        if res.status == "failed":
            self._clear()
            print(f"avparse: {res.path}: {res.error}", file=sys.stderr)
        if not self.enabled:
            return
        done = i + 1
        width = 30
        fill = int(width * done / max(n, 1))
        el = time.perf_counter() - self.t0
        eta = el / done * (n - done)
        line = f"[{'#' * fill}{'.' * (width - fill)}] {done}/{n} files  {el:5.0f}s elapsed  eta {eta:5.0f}s  {res.id}: {res.status}"
        if self.tty:
            print("\r" + line[:120].ljust(120), end="" if done < n else "\n", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def _clear(self):
        if self.enabled and self.tty:
            print("\r" + " " * 120 + "\r", end="", file=sys.stderr)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from avparse.core.weights import WeightsError, WeightsNotFoundError
    from avparse.train.extract import ExtractConfig, ExtractError, list_media, run_extract

    if args.batch < 1:
        return fail("--batch must be at least 1")
    files = list_media(args.inputs)
    if not files:
        return fail(f"no media files found in {' '.join(args.inputs)}")
    cfg = ExtractConfig(
        out_dir=args.out, profile=args.profile, weights=args.weights, backend=args.backend,
        device=args.device, precision=args.precision, batch_snippets=args.batch, audio_framing=args.audio_framing,
    )
    try:
        report = run_extract(files, cfg, on_file=_Progress(not args.quiet))
    except (WeightsNotFoundError, WeightsError, ExtractError) as e:
        return fail(str(e))
    except (ValueError, RuntimeError) as e:  # bad device name, backend set-up
        return fail(str(e).splitlines()[0])
    done = [r for r in report.results if r.status == "done"]
    skipped = [r for r in report.results if r.status == "skipped"]
    failed = report.failed
    print(f"{len(done)} extracted ({sum(r.snippets for r in done)} snippets), {len(skipped)} already done, "
          f"{len(failed)} failed -> {args.out}")
    for r in failed:
        print(f"  failed: {r.path}: {r.error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
