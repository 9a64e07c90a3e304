"""Fetch (or take a local copy of) a data set's zip, check it, and unzip it into ``root``.

torchvision does the download (``download_url``: redirects, a progress bar, the MD5 check); this
module adds what a shared cluster needs: a read timeout, a local ``archive`` instead of the network,
a mirror ``url`` instead of a dead official one, and no half-written data set. The download goes
to ``<name>.part`` and is renamed when complete; the zip is extracted into a temporary folder
whose top-level entries are then moved into ``root``. An interrupted run leaves only a ``.part``
file or a temporary folder that the next run replaces.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import zipfile
from pathlib import Path

__all__ = ["download_and_extract", "fetch_archive", "extract_into"]


def fetch_archive(url: str, root: str | os.PathLike, md5: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` into ``root`` (a progress bar; ``timeout`` s without data aborts) unless a copy
    with the right ``md5`` is there already; returns the archive's path.
    """
    from torchvision.datasets.utils import check_integrity, download_url

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    archive = root / Path(url.split("?")[0]).name
    if archive.is_file() and (md5 is None or check_integrity(str(archive), md5)):
        return archive
    part = archive.with_name(archive.name + ".part")
    part.unlink(missing_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        download_url(url, str(root), filename=part.name, md5=md5)
    except RuntimeError as e:  # torchvision: "File not found or corrupted."
        part.unlink(missing_ok=True)
        raise ValueError(f"{url}: the download does not match md5 {md5} ({e}); a wrong mirror or a changed "
                         "file") from None
    except OSError as e:
        part.unlink(missing_ok=True)
        raise OSError(f"download of {url} failed ({e}). Point `url:` at a mirror, or `archive:` at a copy of the "
                      f"zip you have, or unzip it into {root} yourself") from None
    finally:
        socket.setdefaulttimeout(previous)
    os.replace(part, archive)
    return archive


def extract_into(archive: str | os.PathLike, root: str | os.PathLike, md5: str | None = None) -> Path:
    """Check ``archive`` (a zip; its ``md5`` when given) and move its top-level entries into ``root``."""
    from torchvision.datasets.utils import check_integrity

    archive, root = Path(archive), Path(root)
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} not found")
    if md5 is not None and not check_integrity(str(archive), md5):
        raise ValueError(f"{archive}: does not match md5 {md5} (a truncated or another file); fetch it again")
    if not zipfile.is_zipfile(archive):
        raise ValueError(f"{archive} is not a zip file (interrupted or blocked download?); delete it and retry")
    root.mkdir(parents=True, exist_ok=True)
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
    return root


def download_and_extract(url: str, root: str | os.PathLike, md5: str | None = None, archive: str | None = None,
                         timeout: float = 60.0) -> Path:
    """``archive`` (a local zip: no network) or the zip at ``url``, checked and unzipped into ``root``;
    a downloaded zip is deleted afterwards, a given one kept. Returns ``root``.
    """
    if archive is None and url.startswith("file:"):  # a mirror on a shared file system: no copy needed
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        archive = url2pathname(urlparse(url).path)
    if archive is not None:
        return extract_into(archive, root, md5)
    fetched = fetch_archive(url, root, md5, timeout)
    extract_into(fetched, root)
    fetched.unlink()
    return Path(root)
