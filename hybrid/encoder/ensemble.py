"""Encoder ensembles: several trained LSTMs read as one encoder.

Ensembles of LSTM members are the field's standard lever on skill (Kratzert et al. 2019: a
median NSE +0.027 over single members on 531 CAMELS basins). Here an ensemble is one module,
``EnsembleLSTM``, with the ``RegionalLSTM`` interface: ``encode`` returns the members' hidden
states side by side (the random forest sees every member's features), and the head is the mean
of the members' heads (the regional prediction is the members' mean). So encoding, decoding,
``predict`` and ``base_run`` need no code of their own for ensembles, and a single-member
checkpoint is exactly what it was.

Members must read the same inputs through the same scaler: seeds of one recipe on one split, or
snapshots (epoch checkpoints) of one training, which cost nothing extra to train.

On disk an ensemble is one ``final.pt`` like any other, with ``members`` (each its hyper-
parameters and weights) instead of ``hparams`` / ``state_dict``; it loads with
``torch.load(weights_only=True)`` like every checkpoint here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hybrid.encoder.model import RegionalLSTM
from hybrid.errors import StoreError


class EnsembleLSTM(nn.Module):
    def __init__(self, members: list[RegionalLSTM]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        layers = {m.num_layers for m in members}
        if len(layers) > 1:
            raise StoreError(f"ensemble members differ in num_layers ({sorted(layers)}); their "
                             "states cannot be carried side by side")
        self.members = nn.ModuleList(members)
        self.sizes = [m.hidden_size for m in members]
        self.hidden_size = sum(self.sizes)
        self.num_layers = members[0].num_layers
        self.n_dynamic, self.n_static = members[0].n_dynamic, members[0].n_static

    def _split_state(self, state):
        if state is None:
            return [None] * len(self.members)
        h, c = state
        return list(zip(torch.split(h, self.sizes, -1), torch.split(c, self.sizes, -1)))

    def encode(self, x_d: torch.Tensor, x_s: torch.Tensor, state=None):
        """Every member's hidden states, concatenated along the feature axis, and the members'
        final states concatenated the same way (so a streaming pass can carry them on)."""
        outs, hs, cs = [], [], []
        for member, member_state in zip(self.members, self._split_state(state)):
            out, (h, c) = member.encode(x_d, x_s, member_state)
            outs.append(out)
            hs.append(h)
            cs.append(c)
        return torch.cat(outs, -1), (torch.cat(hs, -1), torch.cat(cs, -1))

    def forward(self, x_d: torch.Tensor, x_s: torch.Tensor, state=None) -> dict:
        hidden, (h_n, c_n) = self.encode(x_d, x_s, state)
        parts = torch.split(hidden, self.sizes, -1)
        y_hat = torch.stack([m.head(m.dropout(p)) for m, p in zip(self.members, parts)]).mean(0)
        return {"y_hat": y_hat, "hidden": hidden, "h_n": h_n, "c_n": c_n}

    def predict_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        parts = torch.split(hidden, self.sizes, -1)
        return torch.stack([m.predict_hidden(p) for m, p in zip(self.members, parts)]).mean(0)


def build_model(final: dict[str, Any], where: str) -> nn.Module:
    """The module a final checkpoint describes: one LSTM, or an ensemble of them."""
    if "members" not in final:
        model = RegionalLSTM.from_hparams(final["hparams"])
        model.load_state_dict(final["state_dict"])
        return model
    members = []
    for i, member in enumerate(final["members"]):
        if not {"hparams", "state_dict"} <= set(member):
            raise StoreError(f"{where}: ensemble member {i} is missing hparams or state_dict")
        model = RegionalLSTM.from_hparams(member["hparams"])
        model.load_state_dict(member["state_dict"])
        members.append(model)
    return EnsembleLSTM(members)


def weights_entry(model: nn.Module, state_dict: dict[str, Any]) -> dict[str, Any]:
    """The weights part of a final checkpoint for ``model`` holding ``state_dict``: one LSTM's
    hyper-parameters and weights, or each ensemble member's (a fine-tuned ensemble stays one)."""
    if not isinstance(model, EnsembleLSTM):
        return {"hparams": dict(model.hparams), "state_dict": state_dict}
    members = []
    for i, member in enumerate(model.members):
        prefix = f"members.{i}."
        members.append({"hparams": dict(member.hparams), "state_dict": {
            k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}})
    return {"members": members}


def combine(finals: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """One ensemble checkpoint from several final checkpoints (or snapshot members made to look
    like them); refuses members that read their inputs differently."""
    first = finals[0]
    for final, name in zip(finals[1:], names[1:]):
        if final["scaler"] != first["scaler"]:
            raise StoreError(f"ensemble member {name}: its scaler differs from {names[0]}'s; "
                             "members must be trained on the same catchments and inputs")
    members = [m for final in finals for m in (
        final["members"] if "members" in final else
        [{"hparams": final["hparams"], "state_dict": final["state_dict"]}])]
    combined = {k: v for k, v in first.items() if k not in ("hparams", "state_dict")}
    # each member's own training record: the model card gives every member's epoch and
    # validation scores, and counts the cost of each distinct training once
    histories = [h for final in finals for h in (
        final["member_histories"] if "member_histories" in final else
        [final.get("history") or []])]
    combined.update(members=members, member_names=list(names),
                    member_best_epochs=[e for f in finals for e in (
                        f["member_best_epochs"] if "member_best_epochs" in f else
                        [f.get("best_epoch", -1)])],
                    member_histories=histories)
    return combined


def trainings(final: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The epoch records of every distinct training behind a final checkpoint: snapshot members
    share one training and count once, seed members each add theirs (what an encoder cost)."""
    distinct: dict[str, list[dict[str, Any]]] = {}
    for history in final.get("member_histories") or [final.get("history") or []]:
        if history:
            distinct.setdefault(repr(history), history)
    return list(distinct.values())


def snapshot(final: dict[str, Any], epoch_state: dict[str, Any], epoch: int) -> dict[str, Any]:
    """An epoch checkpoint of a training as a member: its weights with the final's settings."""
    return {**final, "state_dict": epoch_state["model"], "best_epoch": epoch}

