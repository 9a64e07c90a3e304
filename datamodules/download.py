"""Fetch-and-unzip for data sets with an official URL; small on purpose (urllib + zipfile).

The archive is downloaded to ``<name>.part`` and renamed when complete, then extracted into a
temporary folder whose top-level entries are moved into ``root``: an interrupted run leaves no
half-written data set behind, only a ``.part`` file or temporary folder that the next run replaces.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

__all__ = ["download_and_extract"]


def download_and_extract(url: str, root: str | os.PathLike) -> Path:
    """Download the zip at ``url`` into ``root`` and extract it there; returns ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    archive = root / Path(url.split("?")[0]).name
    if not archive.is_file():
        part = archive.with_name(archive.name + ".part")
        print(f"downloading {url} -> {archive}")
        try:
            with urllib.request.urlopen(url) as response, open(part, "wb") as out:
                shutil.copyfileobj(response, out, length=1 << 20)
        except OSError as e:
            raise OSError(f"download of {url} failed ({e}); fetch it by hand and unzip it into {root}") from None
        os.replace(part, archive)
    if not zipfile.is_zipfile(archive):
        raise ValueError(f"{archive} is not a zip file (interrupted or blocked download?); delete it and retry")
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".extract_"))
    try:
        with zipfile.ZipFile(archive) as z:
            z.extractall(tmp)
        for entry in tmp.iterdir():
            target = root / entry.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(entry, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    archive.unlink()
    return root
