"""Small helpers the sweep commands share: mean ± std over runs, Markdown tables, regime labels."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["REGIME_LABELS", "regime_label", "mean_std", "fmt_mean_std", "fmt_signed", "markdown_table"]

#: the paper's names of the regimes (docs/regimes.md)
REGIME_LABELS = {"io": "FIP-IO", "ioms": "FIP-IO (BN stats)", "iobn": "FIP-IO+BN", "all": "FIP-ALL",
                 "scratch": "from scratch"}


def regime_label(regime: str) -> str:
    return f"{REGIME_LABELS.get(regime, regime)} (`{regime}`)"


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof 1; None for a single run)."""
    if not values:
        raise ValueError("mean_std of no values")
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def fmt_mean_std(mean: float, std: float | None, scale: float = 100.0, digits: int = 1) -> str:
    """``81.2 ± 1.3`` (percent by default); ``81.2`` when there is one run."""
    if std is None or math.isnan(std):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def fmt_signed(value: float | None, scale: float = 100.0, digits: int = 1) -> str:
    return "—" if value is None else f"{value * scale:+.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table (numbers right-aligned by the renderer's defaults)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
