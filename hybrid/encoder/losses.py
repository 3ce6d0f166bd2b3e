"""Training losses, one class each; the same object scores training and validation, so the
number that picks the best epoch is the number that was minimised.

Both ignore missing targets (a missing day carries no loss) and return the sum and the count
separately, so an epoch's validation loss is the mean over every observed target, not a mean
of batch means. ``make_loss`` is the one place a config's ``loss`` key is read.
"""

from __future__ import annotations

import numpy as np
import torch

from hybrid.config import Config
from hybrid.data.windows import CatchmentArrays, period_mask


class MaskedMSE:
    """Squared error over the observed targets of a batch (the paper's loss on standardised
    streamflow)."""

    def __call__(self, y_hat: torch.Tensor, y: torch.Tensor,
                 owners: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.isfinite(y)
        diff = torch.where(mask, y_hat - torch.nan_to_num(y), torch.zeros_like(y_hat))
        return self.weigh(diff ** 2, owners, y.device).sum(), mask.sum()

    def weigh(self, squared: torch.Tensor, owners: torch.Tensor | None, device) -> torch.Tensor:
        return squared

    def mean(self, y_hat: torch.Tensor, y: torch.Tensor,
             owners: torch.Tensor | None = None) -> torch.Tensor:
        total, count = self(y_hat, y, owners)
        return total / count.clamp(min=1)


class NSELoss(MaskedMSE):
    """NSE* (Kratzert et al. 2019): each catchment's squared errors divided by (its target std
    + 0.1)^2, so a wet catchment's large errors do not drown the dry ones."""

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float32)

    def weigh(self, squared: torch.Tensor, owners: torch.Tensor | None, device) -> torch.Tensor:
        if owners is None:
            return squared
        return squared * self.weights.to(device)[owners].unsqueeze(-1)


def make_loss(cfg: Config, arrays: list[CatchmentArrays]) -> MaskedMSE:
    if cfg.loss == "nse":
        return NSELoss(nse_weights(arrays, cfg.train_start_date, cfg.train_end_date))
    return MaskedMSE()


def nse_weights(arrays: list[CatchmentArrays], start, end) -> np.ndarray:
    """1 / (std + 0.1)^2 of each catchment's standardised target over [start, end]."""
    stds = []
    for c in arrays:
        y = c.y[period_mask(c.dates, start, end)]
        y = y[np.isfinite(y)]
        stds.append(float(y.std()) if len(y) > 1 else 1.0)
    return 1.0 / (np.asarray(stds) + 0.1) ** 2
