"""The regional LSTM: an encoder (the LSTM) and a head (dropout + linear), in one module.

``encode`` is the forward pass without the head, so the features the random forests see are
exactly the states the trained model used for its own predictions, not those of a copy that could
drift from it.
"""

from __future__ import annotations

import torch
from torch import nn


class RegionalLSTM(nn.Module):
    def __init__(self, n_dynamic: int, n_static: int, hidden_size: int = 256,
                 num_layers: int = 1, output_dropout: float = 0.4,
                 initial_forget_bias: float = 3.0) -> None:
        super().__init__()
        #: what rebuilds it (a checkpoint stores these beside the weights)
        self.hparams = {"n_dynamic": n_dynamic, "n_static": n_static, "hidden_size": hidden_size,
                        "num_layers": num_layers, "output_dropout": output_dropout,
                        "initial_forget_bias": initial_forget_bias}
        self.n_dynamic, self.n_static = n_dynamic, n_static
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.lstm = nn.LSTM(n_dynamic + n_static, hidden_size, num_layers=num_layers,
                            batch_first=True)
        self.dropout = nn.Dropout(output_dropout)
        self.head = nn.Linear(hidden_size, 1)
        if initial_forget_bias:
            # A high forget-gate bias makes the untrained cell remember by default, which
            # is what lets gradients reach a year back (Gers et al.; NeuralHydrology does this).
            for layer in range(num_layers):
                bias = getattr(self.lstm, f"bias_hh_l{layer}")
                with torch.no_grad():
                    bias[hidden_size:2 * hidden_size] = initial_forget_bias

    @classmethod
    def from_hparams(cls, hparams: dict) -> "RegionalLSTM":
        return cls(**hparams)

    def _inputs(self, x_d: torch.Tensor, x_s: torch.Tensor) -> torch.Tensor:
        if self.n_static == 0:
            return x_d
        return torch.cat([x_d, x_s.unsqueeze(1).expand(-1, x_d.shape[1], -1)], dim=-1)

    def encode(self, x_d: torch.Tensor, x_s: torch.Tensor,
               state: tuple[torch.Tensor, torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Hidden states of the last layer for every step (B x L x H), and the final state."""
        out, (h_n, c_n) = self.lstm(self._inputs(x_d, x_s), state)
        return out, (h_n, c_n)

    def forward(self, x_d: torch.Tensor, x_s: torch.Tensor,
                state: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
        hidden, (h_n, c_n) = self.encode(x_d, x_s, state)
        y_hat = self.head(self.dropout(hidden))
        return {"y_hat": y_hat, "hidden": hidden, "h_n": h_n, "c_n": c_n}

    def predict_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """The head applied to already-encoded states (no dropout: used in evaluation)."""
        return self.head(hidden)
