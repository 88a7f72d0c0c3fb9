"""``python -m mparticle_feed``: the same command line as ``mparticle-feed``."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
