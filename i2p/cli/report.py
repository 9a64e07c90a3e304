"""``i2p report`` (``make results``): regenerate ``docs/results.md`` from the sweep folders.

It reads each sweep's ``sweep.json`` and finished ``runs/*/result.json``, recomputes the tables
(``i2p fewshot`` / ``i2p speedup``'s own aggregation), redraws the plots into ``docs/results/``,
and writes them beside the commands that made them, the paper's claims and the published numbers
of later image-to-point methods, and a reading of what reproduces here. A sweep folder that is
missing is reported with the command that would fill it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path

from i2p.cli import fewshot, speedup
from i2p.cli import sweep as sw
from i2p.cli.pretrain2d import DEMO_ARGS
from i2p.cli.tables import markdown_table, regime_label
from i2p.io import atomic_write_bytes

__all__ = ["DEFAULT_SWEEPS", "SWEEP_COMMANDS", "PAPER", "PUBLISHED", "load_sweep", "reading_fewshot",
           "reading_speedup", "render", "main"]

PRETRAIN = "i2p pretrain2d " + " ".join(DEMO_ARGS)
PRETRAIN_RECORD = Path(".cache/i2p/pretrain2d/resnet18_shapes2d_32px.pth.json")  # its sidecar (val acc)
#: the embedded-data sweeps (docs/experiments.md): folder -> the command that fills it
SWEEP_COMMANDS = {
    "runs/fewshot_synthetic/fewshot": "i2p fewshot --config fewshot_synthetic.yaml --shots 1 5 10 --seeds 0 1 2 "
                                      "--regimes io iobn all scratch --steps 40",
    "runs/fewshot_synthetic/episodes": "i2p fewshot --config fewshot_synthetic.yaml --protocol episodes --ways 5 "
                                       "--shots 10 20 --folds 4 --queries 0 --seeds 0 --regimes io iobn all scratch "
                                       "--steps 40",
    "runs/speedup_synthetic/speedup": "i2p speedup --config speedup_synthetic.yaml --target 0.66 --max-epochs 12 "
                                      "--seeds 0 1 2 --regimes io iobn all scratch",
}
DEFAULT_SWEEPS = tuple(SWEEP_COMMANDS)

#: the paper's claims (Image2Point, Xu et al., ECCV 2022, arXiv:2106.04180, abstract)
PAPER = {"fewshot_gain_points": 10.0, "speedup": 11.1}
#: published top-1 of later image-to-point methods, ModelNet40 / ScanObjectNN PB_T50_RS (docs/recipes.md)
PUBLISHED = [
    ("P2P", "Wang et al., NeurIPS 2022, arXiv:2208.02812", "94.0", "89.3"),
    ("ACT", "Dong et al., ICLR 2023, arXiv:2212.08320", "93.7", "88.2"),
    ("I2P-MAE", "Zhang et al., CVPR 2023, arXiv:2212.06785", "93.7", "90.1"),
    ("Pix4Point", "Qian et al., arXiv:2208.12259", "–", "87.9"),
]


def load_sweep(folder: Path) -> tuple[dict, list[dict]] | None:
    """A sweep's manifest and finished results, or None when the folder holds no sweep."""
    manifest = folder / "sweep.json"
    if not manifest.is_file():
        return None
    spec = json.loads(manifest.read_text())
    return spec, sw.load_results(folder / "runs" / rid for rid in spec["runs"])


def _regimes(results: Sequence[dict]) -> list[str]:
    order = ["io", "ioms", "iobn", "all", "scratch"]
    seen = {r["regime"] for r in results}
    return [r for r in order if r in seen] + sorted(seen - set(order))


def _cost(results: Sequence[dict]) -> str:
    seconds = sum(r["fit_seconds"] + r["test_seconds"] for r in results)
    devices = sorted({r["device"] for r in results})
    threads = sorted({r.get("torch_threads") for r in results if r.get("torch_threads")})
    cpus = sorted({r.get("cpus") for r in results if r.get("cpus")})
    details = ([f"torch threads {'/'.join(map(str, threads))}"] if threads else []) + \
        ([f"{'/'.join(map(str, cpus))} CPUs"] if cpus else [])
    where = ", ".join(devices) + (f" ({', '.join(details)})" if details else "")
    return f"{len(results)} runs, {seconds / 60:.1f} min of fit + test summed over runs, on {where}"


def reading_fewshot(cells: Sequence[dict]) -> list[str]:
    """What the few-shot table says, in sentences computed from it."""
    lines = []
    for key in sorted({(c["ways"], c["shots"]) for c in cells}, key=lambda k: (k[0] or 0, k[1])):
        group = [c for c in cells if (c["ways"], c["shots"]) == key and c["gain"] is not None]
        if not group:
            continue
        best = max(group, key=lambda c: c["gain"])
        scratch = next(c for c in cells if (c["ways"], c["shots"]) == key and c["regime"] == "scratch")
        spreads = [s for s in (best["std"], scratch["std"]) if s is not None]
        if not spreads:
            verdict = "one run each: no spread to compare with"
        else:
            verdict = "beyond the run-to-run spread" if abs(best["gain"]) > max(spreads) else \
                "within the run-to-run spread"
        where = f"{key[0]}-way {key[1]}-shot" if key[0] else f"K = {key[1]}"
        lines.append(f"{where}: the best FIP regime, {regime_label(best['regime'])}, is {best['gain'] * 100:+.1f} "
                     f"points over scratch ({verdict}; the paper: up to +{PAPER['fewshot_gain_points']:.1f}).")
    return lines


def reading_speedup(cells: Sequence[dict], baseline: str = "scratch") -> list[str]:
    """What the speed-up table says; a ratio that would need a run that never reached the target is no number."""
    lines = []
    base = next((c for c in cells if c["regime"] == baseline), None)
    for c in cells:
        name = regime_label(c["regime"])
        missed = (f"did not reach the target in {c['runs'] - c['reached']} of {c['runs']} runs within "
                  f"{c['max_epochs']} epochs")
        if c is base:
            if c["reached"] < c["runs"]:
                lines.append(f"{name} {missed}, so no ratio to it is given as a number.")
        elif c["ratio_epochs"] is not None:
            lines.append(f"{name} reached the target {c['ratio_epochs']:.2f}× sooner in epochs and "
                         f"{c['ratio_seconds']:.2f}× sooner in wall time than {baseline} (the paper: up to "
                         f"{PAPER['speedup']}× in epochs).")
        elif c["reached"] < c["runs"]:
            lines.append(f"{name} {missed}.")
        elif c["epochs"] is not None:
            lines.append(f"{name} reached the target in every run (mean {c['epochs'][0]:.1f} epochs) while "
                         f"{baseline} did not in every run.")
    return lines


def _section(title: str, folder: Path, figures: Path, docs: Path) -> tuple[str, list[str]]:
    loaded = load_sweep(folder)
    command = SWEEP_COMMANDS.get(folder.as_posix(), "")
    if loaded is None or not loaded[1]:
        run = f"\n\n```bash\n{PRETRAIN}\n{command}\n```" if command else ""
        return f"## {title}\n\nNot run yet: `{folder}` holds no finished runs.{run}\n", []
    spec, results = loaded
    regimes = _regimes(results)
    if spec["kind"] == "speedup":
        cells = speedup.aggregate(results, regimes)
        table = speedup.render(cells, spec["target"], spec["monitor"], "scratch", spec["command"], len(results),
                               len(spec["runs"]))
        png = speedup.plot(results, regimes, spec["target"], spec["monitor"])
        reading = reading_speedup(cells)
    else:
        protocol = "episodes" if spec["kind"] == "episodes" else "paper"
        cells = fewshot.aggregate(results, regimes)
        table = fewshot.render(cells, protocol, spec["command"], len(results), len(spec["runs"]))
        png = fewshot.plot(cells, protocol)
        reading = reading_fewshot(cells)
    image = figures / f"{spec['kind']}.png"
    atomic_write_bytes(image, png)
    rel = os.path.relpath(image, docs)
    command = results[0]["command"].replace(f"{Path.cwd()}{os.sep}", "")  # no machine's absolute paths in the doc
    text = (f"## {title}\n\n{table}\n![{title}]({rel})\n\n{_cost(results)}. One run's exact `i2p fit` command "
            f"(from its result file): `{command}`\n")
    return text, reading


def _prior() -> str:
    """What the 2D prior is, from the pretrain2d sidecar when it is there."""
    try:
        record = json.loads(PRETRAIN_RECORD.read_text())
        return f"val acc {record['val_acc']:.2f} on its 2D shapes, chance {record['chance']:.2f}"
    except (OSError, ValueError, KeyError):
        return "its 2D accuracy: see its sidecar .json"


def render(sections: Sequence[tuple[str, list[str]]], host: str) -> str:
    head = f"""# Results on the embedded data

Generated by `i2p report` (`make results`) from the sweep folders under `runs/`; do not edit by hand.
The sweeps and how to run them on ModelNet40 / ScanObjectNN GPUs are in [experiments.md](experiments.md).
Report written on: {host}.

The embedded data are `SyntheticShapes` (12 generated shape classes, `configs/data/synthetic_shapes.yaml`
sizes), and the 2D weights of every FIP regime come from `{PRETRAIN}` (a ResNet-18 trained on
generated 32-px 2D shapes, cached in `.cache/i2p/pretrain2d/`; {_prior()}), not from ImageNet. Test
accuracy is that of the final weights of each run: no epoch is picked by a metric, so nothing is
selected on the test set. Times are those of the machine that ran the sweeps (a shared machine
inflates them; `--threads 1` helps there).

## The paper's claims and published numbers

Image2Point (Xu et al., ECCV 2022, arXiv:2106.04180), abstract: finetuning the image-pretrained model
"improves data efficiency, reaching up to {PAPER['fewshot_gain_points']} top-1 accuracy percent on few-shot
classification" and "speeds up the training of point-cloud models by up to {PAPER['speedup']}x for a target
accuracy (e.g., 90 % accuracy)". Its few-shot protocol is K shots of every ModelNet40 class.

Published top-1 of later image-to-point methods (docs/recipes.md; each paper's own protocol: point counts,
voting and pretraining data differ, so the rows are not one protocol):

"""
    head += markdown_table(["method", "source", "ModelNet40 (%)", "ScanObjectNN PB_T50_RS (%)"], PUBLISHED)
    head += ("\nPublished few-shot numbers of the Point-BERT / ACT line use N-way K-shot episodes (5/10-way, "
             "10/20-shot, 10 folds) and are not comparable with the paper's K-shots-of-every-class protocol.\n\n")
    body = "\n".join(text for text, _ in sections)
    reading = [line for _, lines in sections for line in lines]
    tail = "\n## Reading\n\n"
    tail += "".join(f"- {line}\n" for line in reading) if reading else "- No sweep has finished runs yet.\n"
    tail += """
Why the embedded numbers are not the paper's magnitudes: the shapes are 12 generated classes at voxel 0.1
(~100-300 voxels each), not 40 ModelNet classes at voxel 0.05; the 2D prior is a ResNet-18 trained for a few
minutes on generated 32-px images instead of ImageNet, so the copied kernels carry much less than the paper's;
and the budgets are sized for 2 CPU cores (about 40 optimizer steps per few-shot run, at most a dozen epochs per
speed-up run). A gain or a speed-up here says the mechanism works on this data (inflated 2D kernels as a
starting point), its absence says it does not at this budget and with this prior; neither is a measurement of
the paper's claim, which needs the ModelNet40 / ScanObjectNN commands of [experiments.md](experiments.md).
"""
    return head + body + tail


def _host() -> str:
    import torch

    return f"{platform.machine()} with {os.cpu_count()} CPUs, torch {torch.__version__}"


def main(argv: Sequence[str] = ()) -> int:
    p = argparse.ArgumentParser(prog="i2p report", description=__doc__.splitlines()[0])
    p.add_argument("--fewshot", default=DEFAULT_SWEEPS[0], help="few-shot sweep folder (paper protocol)")
    p.add_argument("--episodes", default=DEFAULT_SWEEPS[1], help="few-shot sweep folder (episodes)")
    p.add_argument("--speedup", default=DEFAULT_SWEEPS[2], help="speed-up sweep folder")
    p.add_argument("--out", default="docs/results.md", help="the report (default docs/results.md)")
    args = p.parse_args(list(argv))
    out = Path(args.out)
    figures = out.parent / "results"
    sections = [
        _section("Few-shot: K shots of every class (the paper's protocol)", Path(args.fewshot), figures, out.parent),
        _section("Few-shot: N-way K-shot episodes (Point-BERT / ACT protocol)", Path(args.episodes), figures,
                 out.parent),
        _section("Time to a target accuracy", Path(args.speedup), figures, out.parent),
    ]
    atomic_write_bytes(out, render(sections, _host()).encode())
    print(f"[report] wrote {out}")
    return 0
