"""The floors run one way (docs/architecture.md): every import in the packages, lazy ones too,
points to the module's own unit or to a lower floor; nothing imports the app (i2p/cli).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: unit (module prefix) -> floor; a module belongs to the longest prefix that matches
FLOORS = {
    "i2p.optional": -1, "i2p.sparse": 0,  # optional imports nothing of the project: every floor may use it
    "i2p.inflate": 1, "i2p.collapse": 1, "i2p.io": 1, "i2p.checkpoint_file": 1,
    "models": 2,
    "datamodules": 3, "callbacks": 3,
    "i2p.cli": 4,
}  # fmt: skip
PACKAGES = ("i2p", "models", "datamodules", "callbacks", "configs")


def unit_of(module: str) -> str | None:
    matches = [u for u in FLOORS if module == u or module.startswith(u + ".")]
    return max(matches, key=len) if matches else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, text: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module) of every import statement in a file, relative ones resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text() if text is None else text, str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out += [(node.lineno, f"{base}.{a.name}" if unit_of(f"{base}.{a.name}") else base) for a in node.names]
    return out


def violations(path: Path, text: str | None = None) -> list[str]:
    source = unit_of(module_name(path))
    if source is None:
        return []
    bad = []
    for line, target in imports(path, text):
        dest = unit_of(target)
        if dest is None or dest == source:
            continue
        if FLOORS[dest] >= FLOORS[source]:
            bad.append(f"{path.relative_to(REPO)}:{line} ({source}, floor {FLOORS[source]}) imports {target} "
                       f"({dest}, floor {FLOORS[dest]})")
    return bad


def package_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def test_every_module_belongs_to_a_floor():
    stray = [str(p.relative_to(REPO)) for p in package_files()
             if unit_of(module_name(p)) is None and module_name(p) not in ("i2p", "configs")]
    assert not stray, f"modules outside every floor of docs/architecture.md: {stray}"


def test_imports_run_down_only():
    bad = [v for p in package_files() for v in violations(p)]
    assert not bad, "imports that run up or sideways:\n" + "\n".join(bad)


@pytest.mark.parametrize("source,target", [("models/x.py", "from i2p.cli import main"),
                                           ("i2p/io.py", "from models.weights import read_checkpoint"),
                                           ("callbacks/x.py", "from datamodules import SyntheticShapes"),
                                           ("i2p/sparse/x.py", "from ..io import atomic_path")])
def test_the_check_catches_an_upward_import(source, target):
    assert violations(REPO / source, target), f"{target!r} in {source} should be refused"
    assert not violations(REPO / "i2p/cli/x.py", target)  # the app may import anything
