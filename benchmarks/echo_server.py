"""The echo server that `krabfast bench --vs-reference` compares krabfast against, for
running by hand: krabfast's own transport (GatewayServer's server creation, picows options,
pre-connect gate, listener, batching sink, fan-out, keepalive) with no gateway behind it.
The implementation, and exactly what it answers, is `krabfast/bench/echo.py`.

    python benchmarks/echo_server.py --port 18790 [--host 127.0.0.1] [--tick-interval-ms 30000]
    KRABFAST_NO_EXTENSIONS=1 python benchmarks/echo_server.py ...   # on the pure-Python core
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
    from krabfast.bench.echo import main

    main()
