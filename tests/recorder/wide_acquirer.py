"""`python -m tests.recorder.wide_acquirer`: the real acquirer on a wider simulated montage.

`amrwatch acquirer` has no flag for SimConfig.extra_channels, so the tests
start the same Acquirer class with it here (20 kHz x 16 channels with 12
extra channels and the sample-index channel).
"""

from __future__ import annotations

import argparse
import sys

from amrwatch.service import setup_logging
from amrwatch.services.acquirer.service import Acquirer
from amrwatch.services.acquirer.simsource import SimSource


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--extra-channels", type=int, default=12)
    p.add_argument("--time-scale", type=float, default=0.1)
    p.add_argument("--scenario", default="disappears-after-decompression")
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loop", action="store_true")
    p.add_argument("--wait-for", default="recorder")
    a = p.parse_args(argv)
    setup_logging("acquirer")

    def make():
        return SimSource(seed=a.seed, scenario=a.scenario, time_scale=a.time_scale, sample_index_channel=True,
                         extra_channels=a.extra_channels)

    svc = Acquirer(make, speed=a.speed, loop=a.loop, wait_for=tuple(w for w in a.wait_for.split(",") if w))
    return svc.run()


if __name__ == "__main__":
    sys.exit(main())
