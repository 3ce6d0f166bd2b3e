"""Which torch device a stage runs on: the config's choice, checked against what torch sees."""

from __future__ import annotations

import torch

from hybrid.errors import HybridError


def pick_device(requested: str) -> str:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise HybridError("device: 'cuda' requested but torch sees no GPU")
        return "cuda"
    return "cpu"
