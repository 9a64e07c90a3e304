"""``i2p fewshot``: few-shot classification, every (shots, seed, regime), as one resumable sweep.

Two protocols, whose numbers are not comparable (docs/experiments.md):

- ``--protocol paper`` (Image2Point): K training shapes of every class (``data.few_shot``, drawn
  per seed), the full test set;
- ``--protocol episodes`` (Point-BERT / ACT): N-way K-shot episodes (``data.episode``), classes
  and shapes drawn per fold, tested on (``--queries`` per class of) those classes' test shapes.

Writes ``sweep.csv`` (one row per run), ``fewshot.md`` / ``episodes.md`` (mean ± std test accuracy
per cell, FIP's gain over scratch, the runs behind each cell) and a plot, under ``--out``
(default ``runs/<config name>/fewshot`` or ``.../episodes``). Other arguments go to ``i2p fit``.
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from i2p.cli import sweep as sw
from i2p.cli.tables import fmt_mean_std, fmt_signed, markdown_table, mean_std, regime_label
from i2p.io import atomic_write_bytes

__all__ = ["build_parser", "build_runs", "aggregate", "render", "plot", "csv_rows", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="i2p fewshot", description=__doc__.splitlines()[0], allow_abbrev=False,
                                epilog="Any other argument is an `i2p fit` override, e.g. --trainer.max_epochs 30.")
    sw.add_sweep_arguments(p)
    p.add_argument("--protocol", choices=("paper", "episodes"), default="paper")
    p.add_argument("--shots", type=int, nargs="+", default=None,
                   help="K training shapes per class (default 1 5 10; episodes: 10 20)")
    p.add_argument("--ways", type=int, nargs="+", default=[5, 10], help="episodes: N classes (default 5 10)")
    p.add_argument("--folds", type=int, default=10, help="episodes: folds 0..F-1 (default 10)")
    p.add_argument("--queries", type=int, default=20,
                   help="episodes: test shapes per class (default 20, Point-BERT's; 0 = all)")
    p.add_argument("--steps", type=int, default=None,
                   help="train each run ~S optimizer steps (max_epochs = ceil(S / batches per epoch)), so every "
                        "K gets the same number of updates; default: the config's max_epochs")
    return p


def build_runs(args: argparse.Namespace) -> list[sw.Run]:
    """The matrix, seeds outermost (a half-finished sweep already holds whole tables of some seeds)."""
    runs = []
    for seed in args.seeds:
        common = ["--seed_everything", str(seed), "--data.init_args.seed", str(seed)]
        if args.protocol == "paper":
            for k in args.shots:
                for regime in args.regimes:
                    runs.append(sw.Run(
                        id=f"{regime}-k{k}-s{seed}", fields={"regime": regime, "shots": k, "seed": seed},
                        args=["--model.init_args.regime", regime, *common, "--data.init_args.few_shot", str(k),
                              "--data.init_args.few_shot_seed", str(seed)],
                        tags=[regime, f"shots{k}", f"seed{seed}"]))  # fmt: skip
            continue
        for ways in args.ways:
            for k in args.shots:
                for fold in range(args.folds):
                    episode = {"ways": ways, "shots": k, "fold": fold, "queries": args.queries or None}
                    for regime in args.regimes:
                        runs.append(sw.Run(
                            id=f"{regime}-w{ways}-k{k}-f{fold}-s{seed}",
                            fields={"regime": regime, "ways": ways, "shots": k, "fold": fold, "seed": seed},
                            args=["--model.init_args.regime", regime, *common, "--data.init_args.few_shot_seed",
                                  str(seed), "--data.init_args.episode", json.dumps(episode)],
                            tags=[regime, f"ways{ways}", f"shots{k}", f"fold{fold}", f"seed{seed}"]))  # fmt: skip
    return runs


def csv_rows(results: Sequence[dict]) -> list[dict]:
    """One CSV row per finished run."""
    rows = []
    for r in results:
        m = r["metrics"]
        rows.append({
            "id": r["id"], **{k: r[k] for k in ("regime", "ways", "shots", "fold", "seed") if k in r},
            "test_acc": m.get("test/acc"), "test_macc": m.get("test/macc"), "test_acc_vote": m.get("test/acc_vote"),
            "train_samples": r["train_samples"], "test_samples": r["test_samples"], "epochs": r["epochs"],
            "steps": r["steps"], "fit_seconds": r["fit_seconds"], "test_seconds": r["test_seconds"],
            "device": r["device"],
        })  # fmt: skip
    return rows


def aggregate(results: Sequence[dict], regimes: Sequence[str]) -> list[dict]:
    """One cell per (ways, shots, regime): runs, mean/std of test accuracy (and voted), gain over scratch."""
    cells: dict[tuple, list[dict]] = {}
    for r in results:
        cells.setdefault((r.get("ways"), r["shots"], r["regime"]), []).append(r)
    order = {name: i for i, name in enumerate(regimes)}
    out = []
    for key in sorted(cells, key=lambda k: (k[0] or 0, k[1], order.get(k[2], len(order)), k[2])):
        ways, shots, regime = key
        runs = cells[key]
        mean, std = mean_std([r["metrics"]["test/acc"] for r in runs])
        votes = [r["metrics"]["test/acc_vote"] for r in runs if "test/acc_vote" in r["metrics"]]
        vote_mean, vote_std = mean_std(votes) if len(votes) == len(runs) else (None, None)
        out.append({"ways": ways, "shots": shots, "regime": regime, "runs": len(runs), "mean": mean, "std": std,
                    "vote_mean": vote_mean, "vote_std": vote_std})
    scratch = {(c["ways"], c["shots"]): c["mean"] for c in out if c["regime"] == "scratch"}
    for c in out:
        base = scratch.get((c["ways"], c["shots"]))
        c["gain"] = None if base is None or c["regime"] == "scratch" else c["mean"] - base
    return out


def render(cells: Sequence[dict], protocol: str, command: str, finished: int, total: int) -> str:
    """The Markdown table (percent top-1, gains in points over scratch at the same shots)."""
    episodes = protocol == "episodes"
    voted = any(c["vote_mean"] is not None for c in cells)
    headers = (["ways"] if episodes else []) + ["shots", "regime", "runs", "test acc (%)"]
    headers += (["voted (%)"] if voted else []) + ["gain over scratch (points)"]
    rows = []
    for c in cells:
        row = ([c["ways"]] if episodes else []) + [c["shots"], regime_label(c["regime"]), c["runs"],
                                                   fmt_mean_std(c["mean"], c["std"])]
        if voted:
            row.append("—" if c["vote_mean"] is None else fmt_mean_std(c["vote_mean"], c["vote_std"]))
        rows.append(row + [fmt_signed(c["gain"])])
    what = ("N-way K-shot episodes (classes and shapes drawn per fold; tested on those classes' test shapes)"
            if episodes else "K training shapes of every class, the full test set")
    spread = "folds and seeds" if episodes else "seeds"
    head = (f"Few-shot top-1 accuracy, {what}: mean ± std over {spread} (sample std), {finished} of {total} runs "
            f"finished.\n\n`{command}`\n\n")
    return head + markdown_table(headers, rows)


def plot(cells: Sequence[dict], protocol: str) -> bytes:
    """Accuracy against shots, one line per regime (and ways), error bars = std; PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((c["ways"], c["regime"]), []).append(c)
    for (ways, regime), cs in groups.items():
        label = regime_label(regime).replace("`", "") + (f", {ways}-way" if ways else "")
        ax.errorbar([c["shots"] for c in cs], [100 * c["mean"] for c in cs],
                    yerr=[100 * (c["std"] or 0) for c in cs], marker="o", capsize=3, label=label)
    ax.set_xlabel("training shapes per class (K)")
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_title("few-shot: " + ("N-way K-shot episodes" if protocol == "episodes" else "K shots of every class"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def canonical_command(args: argparse.Namespace, fit_args: Sequence[str]) -> str:
    """The sweep's command line without the placement options (devices, array task, list/collect)."""
    parts = ["i2p", "fewshot", "--config", args.config, "--protocol", args.protocol, "--shots",
             *map(str, args.shots), "--seeds", *map(str, args.seeds), "--regimes", *args.regimes]
    if args.protocol == "episodes":
        parts += ["--ways", *map(str, args.ways), "--folds", str(args.folds), "--queries", str(args.queries)]
    if args.steps:
        parts += ["--steps", str(args.steps)]
    parts += ["--out", str(args.out), *fit_args]
    return shlex.join(parts)


def main(argv: Sequence[str] = ()) -> int:
    args, fit_args = build_parser().parse_known_args(list(argv))
    if args.shots is None:
        args.shots = [10, 20] if args.protocol == "episodes" else [1, 5, 10]
    kind = "fewshot" if args.protocol == "paper" else "episodes"
    args.out = Path(args.out) if args.out else sw.default_out(args.config, kind)
    group = args.group or f"{sw.config_name(args.config)}/{kind}"
    command = canonical_command(args, fit_args)
    sweep = sw.Sweep(kind=kind, command=command, config=args.config, fit_args=list(fit_args), out=args.out,
                     group=group, runs=build_runs(args), steps=args.steps, keep_checkpoints=args.keep_checkpoints)
    results, failed = sw.run_sweep(sweep, args)
    if args.list:
        return 0
    write_outputs(sweep, results, args.regimes, args.protocol)
    return 1 if failed else 0


def write_outputs(sweep: sw.Sweep, results: Sequence[dict], regimes: Sequence[str], protocol: str) -> None:
    """``sweep.csv``, ``<kind>.md`` and ``<kind>.png`` from the finished runs."""
    sw.write_csv(sweep.out / "sweep.csv", csv_rows(results))
    if not results:
        print(f"[{sweep.kind}] no finished runs yet in {sweep.out}", file=sys.stderr)
        return
    cells = aggregate(results, regimes)
    table = render(cells, protocol, sweep.command, len(results), len(sweep.runs))
    atomic_write_bytes(sweep.out / f"{sweep.kind}.md", table.encode())
    atomic_write_bytes(sweep.out / f"{sweep.kind}.png", plot(cells, protocol))
    print(table)
