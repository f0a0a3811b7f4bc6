"""`python -m benchmarks COMMAND`: benchmark commands (now: `peers`)."""

from __future__ import annotations

import sys


def main() -> int:
    """Dispatch to the command named by the first argument."""
    if len(sys.argv) < 2 or sys.argv[1] != "peers":
        print("usage: python -m benchmarks peers [--quick] [--rounds N] [--pipeline-only] [--kafka HOST:PORT] "
              "[--check-readme] [-h]", file=sys.stderr)
        return 2
    from benchmarks.peers.run import main as peers

    return peers(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
