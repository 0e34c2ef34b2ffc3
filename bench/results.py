"""Machine-readable figures of one benchmark module, for `bench.run`.

Each module calls `record(ratios=…, raw=…)` once at its end. `bench.run`
sets `EXPORTD_BENCH_JSON` to a file per module and merges them into
`bench/results/latest.json` (`{"machine", "ratios", "targets", "raw", …}`),
so a regression is one `jq '.ratios'` away. Run by hand (no variable set),
the figures are only printed as usual.

Names are stable: `<area>_<what>_vs_<baseline>` for a ratio (higher is
better unless the name ends in `_time`), anything measured under `raw`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ENV = "EXPORTD_BENCH_JSON"


def record(*, ratios: dict[str, float], raw: dict[str, Any] | None = None) -> None:
    """Add this module's ratios and raw figures to the file `bench.run` named."""
    target = os.environ.get(ENV)
    if not target:
        return
    path = Path(target)
    current: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    current.setdefault("ratios", {}).update({k: round(float(v), 3) for k, v in ratios.items()})
    current.setdefault("raw", {}).update(raw or {})
    path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
