"""A machine without hub access, for the tests of `pretrained: true` on a node without internet."""

from __future__ import annotations

from pathlib import Path

import torch


def unreachable_hub(monkeypatch, tmp_path: Path) -> Path:
    """Empty weights caches (Hugging Face, torch hub) under ``tmp_path`` and a hub endpoint that refuses
    connections at once (port 9 of this machine); returns ``tmp_path``.
    """
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    return tmp_path
