"""`python -m bench.plot`: throughput vs input size for every contender, from bench/results/prepare-*.json."""
from __future__ import annotations

import json
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.prepare import RESULTS  # noqa: E402

PLOT = RESULTS / "prepare-throughput.png"


def main() -> int:
    series: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for path in sorted(RESULTS.glob("prepare-*.json")):
        for row in json.loads(path.read_text())["results"]:
            if row["rows_per_s_per_core"]:
                series[(row["contender"], row["day"])].append((row["rows"], row["rows_per_s_per_core"]))
    figure, axis = plt.subplots(figsize=(8, 5))
    for (contender, day), points in sorted(series.items()):
        points.sort()
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", linestyle="-" if day == "day1" else "--",
                  label=f"{contender}, {day}")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("input rows per day")
    axis.set_ylabel("rows per second per core (whole prepare)")
    axis.set_title("prepare: throughput vs input size (2-core machine)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(PLOT, dpi=120)
    print(PLOT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
