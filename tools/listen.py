"""`avparse listen ENDPOINT`: subscribe to an event stream and print its events.

Does the snapshot-then-subscribe handshake (with --snapshot), prints the
events open at join time, then live events, one per line (human-readable, or
JSON lines with --json); gaps and publisher restarts go to stderr, one line
each. Ctrl-C ends it (exit 0).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from avparse.tools.common import fail


def _as_dict(m) -> dict:
    from avparse.stream import wire

    head = dict(publisher=m.publisher, session=m.session, seq=m.seq, tseq=m.tseq, wall_time=m.wall_time)
    if m.event is not None:
        d = wire.event_body(m.event, **head)
    else:
        d = {"v": wire.SCHEMA_VERSION, "type": m.type, **head}
        if m.type == "heartbeat":
            d["topics"] = m.topics
        else:
            d["stats"] = m.stats
    if m.from_snapshot:
        d["from_snapshot"] = True
    return d


def _human(m) -> str:
    if m.event is not None:
        e = m.event
        line = f"[{e.stream}] {e.kind:<6} {e.label} ({e.modality}) at {e.media_time:.2f} s  score {e.score:.2f}"
        if e.kind == "offset":
            on = "?" if e.onset_time is None else f"{e.onset_time:.2f} s"
            line += f"  onset {on}  reason {e.reason}"
        line += f"  seq {m.seq}"
        if m.from_snapshot:
            line += "  (open when joined)"
        return line
    if m.type == "heartbeat":
        return f"heartbeat {m.publisher} seq {m.seq}"
    return f"stats {m.publisher} seq {m.seq}: {json.dumps(m.stats, separators=(',', ':'))}"


def main(argv=None) -> int:
    from avparse.stream import wire

    ap = argparse.ArgumentParser(prog="avparse listen", description=__doc__.split("\n\n")[0])
    ap.add_argument("endpoint", help="event endpoint of a runtime or proxy, e.g. tcp://127.0.0.1:5556")
    ap.add_argument("--snapshot", action="append", default=[], metavar="ENDPOINT",
                    help="snapshot endpoint(s) to learn the events open at join time (repeat per runtime behind a proxy)")
    ap.add_argument("--stream", action="append", default=[], help="only this stream (repeatable)")
    ap.add_argument("--type", action="append", default=[], choices=wire.TYPES,
                    help="only this message type (repeatable; default: onset and offset)")
    ap.add_argument("--json", action="store_true", help="print JSON lines (the documented schema) instead of text")
    ap.add_argument("--curve-server-key", metavar="FILE", help="the publisher's public key file (server.key)")
    ap.add_argument("--curve-client-key", metavar="FILE", help="this client's secret key file (NAME.key_secret)")
    ap.add_argument("--count", type=int, default=0, help="exit after this many events (0: run until Ctrl-C)")
    ap.add_argument("--duration", type=float, default=0.0, help="exit after this many seconds (0: no limit)")
    args = ap.parse_args(argv)

    from avparse.stream.client import CurveClientKeys, Subscriber, SubscriberError

    if bool(args.curve_server_key) != bool(args.curve_client_key):
        return fail("CURVE needs both --curve-server-key and --curve-client-key")
    try:
        for s in args.stream:
            wire.check_stream_name(s)
        curve = (CurveClientKeys.from_files(args.curve_server_key, args.curve_client_key)
                 if args.curve_server_key else None)
    except (wire.WireError, SubscriberError) as e:
        return fail(str(e))

    import zmq

    stop = []
    old = {sig: signal.signal(sig, lambda *_: stop.append(1)) for sig in (signal.SIGINT, signal.SIGTERM)}
    sub = Subscriber(args.endpoint, snapshot=args.snapshot, streams=args.stream,
                     types=tuple(args.type) or wire.EVENT_TYPES, curve=curve)
    n = 0
    end = time.monotonic() + args.duration if args.duration > 0 else None
    try:
        try:
            sub.open()
        except zmq.ZMQError as e:
            return fail(f"cannot connect to {args.endpoint}: {e.strerror} (endpoints look like tcp://HOST:PORT)")
        except SubscriberError as e:
            return fail(str(e))
        while not stop and (end is None or time.monotonic() < end) and not (args.count and n >= args.count):
            item = sub.recv(timeout=0.2)
            if item is None:
                continue
            if not hasattr(item, "type"):  # Gap or Restart
                print(f"avparse listen: {item.describe()}", file=sys.stderr, flush=True)
                continue
            print(json.dumps(_as_dict(item), separators=(",", ":")) if args.json else _human(item), flush=True)
            if item.event is not None:
                n += 1
    except BrokenPipeError:
        pass
    finally:
        sub.close()
        for sig, h in old.items():
            signal.signal(sig, h)
    return 0
