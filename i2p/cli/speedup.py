"""``i2p speedup``: epochs, steps and wall time to a target accuracy per regime, and scratch / FIP ratios.

Every (seed, regime) trains until ``--monitor`` (default ``val/acc``) reaches ``--target`` or
``--max-epochs`` run out; the landed ``TimeToAccuracy`` records when (and the run stops there).
Writes ``speedup.csv`` (one row per run), ``speedup.md`` and ``curves.png`` (the monitored metric of every run against
epochs, one colour per regime) under ``--out`` (default ``runs/<config name>/speedup``). A run
that did not reach the target is reported as "not reached within the budget", never as a number.
Other arguments go to ``i2p fit``.
"""

from __future__ import annotations

import argparse
import io
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from i2p.cli import sweep as sw
from i2p.cli.tables import fmt_mean_std, markdown_table, mean_std, regime_label
from i2p.io import atomic_write_bytes

__all__ = ["build_parser", "build_runs", "aggregate", "render", "plot", "csv_rows", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="i2p speedup", description=__doc__.splitlines()[0], allow_abbrev=False,
                                epilog="Any other argument is an `i2p fit` override.")
    sw.add_sweep_arguments(p)
    p.set_defaults(seeds=[0])
    p.add_argument("--target", type=float, required=True, help="accuracy to reach, e.g. 0.9")
    p.add_argument("--max-epochs", type=int, required=True, help="the budget of every run")
    p.add_argument("--monitor", default="val/acc", help="the metric compared with the target (default val/acc)")
    p.add_argument("--baseline", default="scratch", help="the regime the others are compared with (default scratch)")
    return p


def build_runs(args: argparse.Namespace) -> list[sw.Run]:
    runs = []
    for seed in args.seeds:
        for regime in args.regimes:
            runs.append(sw.Run(
                id=f"{regime}-s{seed}", fields={"regime": regime, "seed": seed},
                args=["--model.init_args.regime", regime, "--seed_everything", str(seed), "--data.init_args.seed",
                      str(seed), "--trainer.max_epochs", str(args.max_epochs)],
                tags=[regime, f"seed{seed}", f"target{args.target:g}"]))  # fmt: skip
    return runs


def csv_rows(results: Sequence[dict]) -> list[dict]:
    rows = []
    for r in results:
        hit = r.get("reached")
        best = max((h[r["monitor"]] for h in r["history"] if r["monitor"] in h), default=None)
        rows.append({
            "id": r["id"], "regime": r["regime"], "seed": r["seed"], "target": r["target"],
            "reached": hit is not None, "epochs_to_target": hit["epochs"] if hit else None,
            "steps_to_target": hit["step"] if hit else None, "seconds_to_target": hit["seconds"] if hit else None,
            "best": best, "epochs_trained": r["epochs"], "max_epochs": r["max_epochs"],
            "test_acc": r["metrics"].get("test/acc"), "fit_seconds": r["fit_seconds"], "device": r["device"],
        })  # fmt: skip
    return rows


def aggregate(results: Sequence[dict], regimes: Sequence[str], baseline: str = "scratch") -> list[dict]:
    """Per regime: runs, how many reached the target, mean epochs / steps / seconds to it, and the
    baseline / regime ratios; a ratio is None unless every run of both reached the target.
    """
    by_regime: dict[str, list[dict]] = {}
    for row in csv_rows(results):
        by_regime.setdefault(row["regime"], []).append(row)
    order = {name: i for i, name in enumerate(regimes)}
    cells = []
    for regime in sorted(by_regime, key=lambda r: (order.get(r, len(order)), r)):
        rows = by_regime[regime]
        hits = [r for r in rows if r["reached"]]
        cell = {"regime": regime, "runs": len(rows), "reached": len(hits), "max_epochs": max(r["max_epochs"]
                for r in rows), "best": max((r["best"] for r in rows if r["best"] is not None), default=None)}
        for unit in ("epochs", "steps", "seconds"):
            values = [r[f"{unit}_to_target"] for r in hits]
            cell[unit] = mean_std(values) if len(hits) == len(rows) else None
        cells.append(cell)
    base = next((c for c in cells if c["regime"] == baseline), None)
    for c in cells:
        for unit in ("epochs", "seconds"):
            ok = base is not None and c is not base and base[unit] is not None and c[unit] is not None
            c[f"ratio_{unit}"] = base[unit][0] / c[unit][0] if ok and c[unit][0] > 0 else None
    return cells


def _to_target(cell: dict, unit: str, digits: int, short: bool = False) -> str:
    if cell[unit] is None:
        if short:
            return "—"
        if cell["reached"] == 0:
            return f"not reached within {cell['max_epochs']} epochs"
        return f"not reached in {cell['runs'] - cell['reached']} of {cell['runs']} runs"
    return fmt_mean_std(cell[unit][0], cell[unit][1], scale=1.0, digits=digits)


def _ratio(cell: dict, unit: str, base: dict | None, baseline: str) -> str:
    if base is None:
        return f"— (no {baseline} runs)"
    if cell is base:
        return "1 (baseline)"
    if cell[f"ratio_{unit}"] is not None:
        return f"{cell[f'ratio_{unit}']:.2f}×"
    who = baseline if base[unit] is None else cell["regime"]
    return f"— ({who} did not reach the target in every run)"


def render(cells: Sequence[dict], target: float, monitor: str, baseline: str, command: str, finished: int,
           total: int) -> str:
    base = next((c for c in cells if c["regime"] == baseline), None)
    headers = ["regime", "runs", "reached", f"epochs to {monitor} ≥ {target:g}", "steps", "seconds",
               f"{baseline} ÷ regime (epochs)", f"{baseline} ÷ regime (seconds)", f"best {monitor}"]
    rows = [[regime_label(c["regime"]), c["runs"], f"{c['reached']}/{c['runs']}", _to_target(c, "epochs", 1),
             _to_target(c, "steps", 0, short=True), _to_target(c, "seconds", 0, short=True),
             _ratio(c, "epochs", base, baseline), _ratio(c, "seconds", base, baseline),
             "—" if c["best"] is None else f"{c['best']:.3f}"] for c in cells]
    head = (f"Time to {monitor} ≥ {target:g}: mean ± std over seeds of the epochs (1 = after the first epoch), "
            f"optimizer steps and wall seconds of fit (validation included) at which the target was first "
            f"reached; ratios of the means. {finished} of {total} runs finished.\n\n`{command}`\n\n")
    return head + markdown_table(headers, rows)


def plot(results: Sequence[dict], regimes: Sequence[str], target: float, monitor: str) -> bytes:
    """The monitored metric against epochs for every run, one colour per regime, the target dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(dict.fromkeys([*regimes, *(r["regime"] for r in results)]))
    labelled = set()
    for r in sorted(results, key=lambda r: (names.index(r["regime"]), r["seed"])):
        points = [(h["epoch"], h[monitor]) for h in r["history"] if monitor in h]
        if not points:
            continue
        regime = r["regime"]
        label = None if regime in labelled else regime_label(regime).replace("`", "")
        labelled.add(regime)
        ax.plot(*zip(*points), color=colours[names.index(regime) % len(colours)], alpha=0.8, marker=".",
                label=label)
    ax.axhline(target, color="k", ls="--", lw=1, label=f"target {target:g}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(monitor)
    ax.set_title(f"learning curves to {monitor} ≥ {target:g}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def canonical_command(args: argparse.Namespace, fit_args: Sequence[str]) -> str:
    parts = ["i2p", "speedup", "--config", args.config, "--target", f"{args.target:g}", "--max-epochs",
             str(args.max_epochs), "--seeds", *map(str, args.seeds), "--regimes", *args.regimes]
    if args.monitor != "val/acc":
        parts += ["--monitor", args.monitor]
    return shlex.join([*parts, "--out", str(args.out), *fit_args])


def main(argv: Sequence[str] = ()) -> int:
    args, fit_args = build_parser().parse_known_args(list(argv))
    if args.max_epochs < 1:
        raise SystemExit("i2p speedup: --max-epochs must be >= 1")
    args.out = Path(args.out) if args.out else sw.default_out(args.config, "speedup")
    group = args.group or f"{sw.config_name(args.config)}/speedup"
    sweep = sw.Sweep(kind="speedup", command=canonical_command(args, fit_args), config=args.config,
                     fit_args=list(fit_args), out=args.out, group=group, runs=build_runs(args), target=args.target,
                     monitor=args.monitor, keep_checkpoints=args.keep_checkpoints)
    results, failed = sw.run_sweep(sweep, args)
    if args.list:
        return 0
    write_outputs(sweep, results, args.regimes, args.baseline)
    return 1 if failed else 0


def write_outputs(sweep: sw.Sweep, results: Sequence[dict], regimes: Sequence[str], baseline: str) -> None:
    """``speedup.csv``, ``speedup.md`` and ``curves.png`` from the finished runs."""
    sw.write_csv(sweep.out / "speedup.csv", csv_rows(results))
    if not results:
        print(f"[speedup] no finished runs yet in {sweep.out}", file=sys.stderr)
        return
    cells = aggregate(results, regimes, baseline)
    table = render(cells, sweep.target, sweep.monitor, baseline, sweep.command, len(results), len(sweep.runs))
    atomic_write_bytes(sweep.out / "speedup.md", table.encode())
    atomic_write_bytes(sweep.out / "curves.png", plot(results, regimes, sweep.target, sweep.monitor))
    print(table)
