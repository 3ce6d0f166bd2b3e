"""The regional LSTM module: the encoder is the same module as the model, minus its head."""

from __future__ import annotations

import pytest
import torch

from hybrid.encoder.model import RegionalLSTM


def _model(**kwargs) -> RegionalLSTM:
    torch.manual_seed(0)
    return RegionalLSTM(n_dynamic=3, n_static=2, hidden_size=8, **kwargs)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_forget_gate_bias_is_initialised(num_layers: int) -> None:
    model = _model(num_layers=num_layers, initial_forget_bias=3.0)
    h = model.hidden_size
    for layer in range(num_layers):
        bias = getattr(model.lstm, f"bias_hh_l{layer}").detach()
        # PyTorch's gate order is input, forget, cell, output: only the forget slice is set
        assert torch.all(bias[h:2 * h] == 3.0)
        assert not torch.any(bias[:h] == 3.0) and not torch.any(bias[2 * h:] == 3.0)
    # 0 leaves PyTorch's default initialisation
    plain = _model(num_layers=num_layers, initial_forget_bias=0.0)
    assert not torch.any(plain.lstm.bias_hh_l0.detach()[h:2 * h] == 3.0)


def test_encode_is_forward_without_the_head() -> None:
    model = _model(output_dropout=0.4).eval()
    x_d, x_s = torch.randn(5, 20, 3), torch.randn(5, 2)
    with torch.no_grad():
        out = model(x_d, x_s)
        hidden, (h_n, c_n) = model.encode(x_d, x_s)
    assert set(out) >= {"y_hat", "hidden", "h_n", "c_n"}
    assert out["hidden"].shape == (5, 20, 8) and out["y_hat"].shape == (5, 20, 1)
    assert torch.equal(out["hidden"], hidden)
    assert torch.equal(out["h_n"], h_n) and torch.equal(out["c_n"], c_n)
    assert torch.equal(h_n[-1], hidden[:, -1])
    # in eval mode (dropout off) the prediction is the head applied to the hidden states
    assert torch.equal(out["y_hat"], model.head(hidden))
    assert torch.equal(model.predict_hidden(hidden), out["y_hat"])
    # the static attributes are repeated at every step, so they matter
    with torch.no_grad():
        assert not torch.equal(model.encode(x_d, x_s + 1.0)[0], hidden)


def test_dropout_only_in_training_mode() -> None:
    model = _model(output_dropout=0.5)
    x_d, x_s = torch.randn(4, 10, 3), torch.randn(4, 2)
    model.train()
    with torch.no_grad():
        out = model(x_d, x_s)
    assert not torch.equal(out["y_hat"], model.head(out["hidden"]))


def test_state_carries_across_calls() -> None:
    """Streaming relies on this: two halves with the carried state equal one whole pass."""
    model = _model().eval()
    x_d, x_s = torch.randn(2, 30, 3), torch.randn(2, 2)
    with torch.no_grad():
        whole, _ = model.encode(x_d, x_s)
        first, state = model.encode(x_d[:, :12], x_s)
        second, _ = model.encode(x_d[:, 12:], x_s, state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=0, atol=1e-6)


def test_no_static_attributes() -> None:
    model = RegionalLSTM(n_dynamic=3, n_static=0, hidden_size=4).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 5, 3), torch.zeros(2, 0))
    assert out["hidden"].shape == (2, 5, 4)


def test_from_hparams_round_trip() -> None:
    hp = {"n_dynamic": 3, "n_static": 2, "hidden_size": 8, "num_layers": 1,
          "output_dropout": 0.1, "initial_forget_bias": 2.0}
    model = RegionalLSTM.from_hparams(hp)
    assert model.hidden_size == 8 and model.lstm.input_size == 5
    assert model.dropout.p == 0.1
