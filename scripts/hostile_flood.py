"""Measure a subscription flood against a publisher (issue 18): prints the publisher's RSS
before, at its peak and after, and a well-behaved subscriber's event count and latency p99.

    python scripts/hostile_flood.py LIMITS_JSON CONNECTIONS SUBSCRIPTIONS SIZE

LIMITS_JSON sets PeerLimits fields ('{}': the defaults; the "before" figures of
docs/reliability.md used '{"max_frame": 2000, "max_subscription": 2000,
"max_subscriptions": 100000000, "max_total": 1000000000, "rcvhwm": 1000}'). The publisher runs
in a child process (4 GiB address-space limit) built from tests/reliability/test_hostile.py's
helpers; everything is on loopback and stops by itself.
"""

import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))
import test_hostile as T  # noqa: E402


def main() -> None:
    limits, conns, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    child = T.Child(Path(tempfile.mkdtemp(prefix="hostile-")), T.PUBLISHER_CHILD, limits, "60", T.ANY,
                    address_space=4 * T.GIB)
    ep = child.endpoints[0]
    time.sleep(0.5)
    before = child.rss_mb()
    peak = [before]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], child.rss_mb())
            time.sleep(0.01)

    threading.Thread(target=sample, daemon=True).start()
    got, lat, sent = T.watch(ep, 4.0, during=lambda: T.flood(ep, connections=conns, subscriptions=n, size=size))
    after = child.rss_mb()
    stop.set()
    c = child.finish()
    print(f"limits={limits} conns={conns} subs={n} size={size}: RSS before {before:.0f} MB, peak {peak[0]:.0f}, "
          f"after {after:.0f}; events {len(got)}, p99 {T.p99(lat) * 1000:.0f} ms; "
          f"connections cut {c['dropped_subscriptions']}; sent {sent / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
