"""`avparse proxy --xsub EP [--xsub EP ...] --xpub EP`: forward many runtimes to many subscribers.

ZeroMQ's own XSUB/XPUB proxy: the XSUB side connects to each runtime's event
endpoint (--xsub, repeatable; or binds with --xsub-bind for publishers that
connect), the XPUB side binds the endpoint subscribers use. Snapshots are not
proxied: late joiners ask each runtime's snapshot endpoint directly
(see docs/eventstream.md). Ctrl-C ends it (exit 0).
"""

from __future__ import annotations

import argparse
import signal
import time

from avparse.tools.common import fail


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="avparse proxy", description=__doc__.split("\n\n")[0])
    ap.add_argument("--xsub", action="append", default=[], metavar="EP",
                    help="a runtime's event endpoint to forward from (repeatable)")
    ap.add_argument("--xsub-bind", action="append", default=[], metavar="EP",
                    help="bind this endpoint for publishers that connect (repeatable)")
    from avparse.stream.proxy import ProxyConfig

    ap.add_argument("--xpub", default=ProxyConfig.xpub, metavar="EP",
                    help=f"endpoint subscribers connect to (default {ProxyConfig.xpub})")
    ap.add_argument("--curve-client-key", metavar="FILE", help="our secret key file towards CURVE runtimes")
    ap.add_argument("--curve-upstream-server-key", metavar="FILE", help="the runtimes' public server key file")
    ap.add_argument("--curve-server-key", metavar="FILE", help="our secret server key file towards subscribers")
    ap.add_argument("--curve-allow", metavar="DIR", help="folder of allowed subscriber public keys (*.key)")
    ap.add_argument("--duration", type=float, default=0.0, help="exit after this many seconds (0: until Ctrl-C)")
    args = ap.parse_args(argv)

    from avparse.stream.client import SubscriberError
    from avparse.stream.proxy import Proxy, ProxyError

    if bool(args.curve_client_key) != bool(args.curve_upstream_server_key):
        return fail("upstream CURVE needs both --curve-client-key and --curve-upstream-server-key")
    cfg = ProxyConfig(xsub=tuple(args.xsub), xsub_bind=tuple(args.xsub_bind), xpub=args.xpub,
                      curve_client_key=args.curve_client_key,
                      curve_upstream_server_key=args.curve_upstream_server_key,
                      curve_server_key=args.curve_server_key, curve_allow_dir=args.curve_allow)
    from avparse.stream.guard import raise_fd_limit

    raise_fd_limit()  # toward the hard limit: room for subscribers (a half-open crowd is cut near it)
    stop = []
    old = {sig: signal.signal(sig, lambda *_: stop.append(1)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            proxy = Proxy(cfg).start()
        except (ProxyError, SubscriberError, ValueError, OSError) as e:
            return fail(str(e))
        print(f"avparse proxy: {', '.join(proxy.xsub_endpoints)} -> {proxy.xpub_endpoint}", flush=True)
        end = time.monotonic() + args.duration if args.duration > 0 else None
        while not stop and (end is None or time.monotonic() < end):
            if proxy.wait(0.2):
                break
        proxy.stop()
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
    return 0
