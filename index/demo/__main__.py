"""python -m index.demo [--out DIR] [--quiet]: assemble the demo catalog from free music and index it."""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m index.demo", description=__doc__.split(": ", 1)[1])
    p.add_argument("--out", default=None, help="demo directory (default: $TONEARM_HOME/demo)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    from . import build_demo_index

    build_demo_index(args.out, progress=not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
