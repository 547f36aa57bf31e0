"""A bounded soak of the live runtime on loopback: several generated scenes, several subscribers.

    avparse soak --minutes 30 --streams 3 --subscribers 3 [--speed 4] [--model CKPT]

Runs ``--streams`` generated scenes of ``--minutes`` of scene time each through one Runtime
(paced at ``--speed`` times real time on the real clock, so latency means what it means live),
publishes on loopback ports with a JSON-lines event log, and keeps ``--subscribers`` Subscriber
clients (each in its own thread) reading everything. It stops by itself when the scenes end
(or after ``--max-wall`` seconds), then prints:

- memory: the process's RSS over time (one row per report interval), and its growth from the
  first to the last quarter of the run;
- latency over time: from the moment the newest evidence of an event (its stream's audio up to
  ``decided_at``) left the source to the event's arrival at a subscriber, per interval (median,
  p95, max);
- the runtime's input lag (capture to dequeue; * its maximum since the start) and the largest
  queue depth seen in the interval's stats;
- event counts: in the log, sent by the publisher, and at every subscriber, with gaps, restarts
  and whether each subscriber received exactly the logged events (by seq).

Exit status 0 when every subscriber received every logged event and no gap, 1 otherwise, 2 for
a user error. Run it at low priority on a shared machine: ``nice -n 19 avparse soak``.
Without ``--model`` it uses a small random lite model (its events are arbitrary but many, which
is what a soak wants: the plumbing is what is measured).
"""

from __future__ import annotations

import argparse
import sys

from .common import run_main


def build_parser() -> argparse.ArgumentParser:
    from .harness.soak import SoakConfig

    d = SoakConfig()
    p = argparse.ArgumentParser(prog="avparse soak", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--minutes", type=float, default=d.minutes, help="scene time per stream (minutes)")
    p.add_argument("--streams", type=int, default=d.streams, help="generated scenes run at once")
    p.add_argument("--subscribers", type=int, default=d.subscribers, help="Subscriber clients reading everything")
    p.add_argument("--speed", type=float, default=d.speed, help="pacing: times real time (1: live)")
    p.add_argument("--fast", action="store_true",
                   help="no pacing: scenes as fast as the pipeline goes, on a virtual clock (latency then "
                        "includes the wait in the full source queue)")
    p.add_argument("--model", metavar="CKPT", help="checkpoint (default: a small random lite model)")
    p.add_argument("--extractor", choices=("model", "stats"), default=d.extractor,
                   help="model: the checkpoint's extractors; stats: a cheap stand-in (RMS, zero crossings, "
                        "frame means) with a small random HAN, for long soaks on a small CPU")
    p.add_argument("--scene-size", type=int, default=d.scene_size, help="generated frame width and height (pixels)")
    p.add_argument("--scene-fps", type=int, default=d.scene_fps, help="generated frame rate")
    p.add_argument("--on", type=float, default=d.on, help="tracker threshold")
    p.add_argument("--interval", type=float, default=d.interval, help="wall seconds between report rows")
    p.add_argument("--max-wall", type=float, default=d.max_wall,
                   help="stop after this many wall seconds whatever happens (default: the paced length + 120)")
    p.add_argument("--out", metavar="DIR", help="folder for the event log and the JSON report (default: a temp dir)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the first scene (then +1 per stream)")
    return p


def main(argv=None) -> int:
    from .harness.soak import SoakConfig, run

    return run_main(build_parser, lambda args: run(SoakConfig(**vars(args))), argv)


if __name__ == "__main__":
    sys.exit(main())
