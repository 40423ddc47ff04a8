"""The LSTM over chunks with episode starts (tradingbot.algo.fast.sequence) against its
step-by-step reference."""

from __future__ import annotations

import pytest
import torch as th
from torch import nn

from conftest import BOX_ACTIONS, make_policy
from tradingbot.algo.fast.sequence import lstm_over_chunks, lstm_step_by_step, lstms_over_chunks


def _random_chunks(n_chunks: int, seq_len: int, p_start: float, seed: int):
    gen = th.Generator().manual_seed(seed)
    inputs = th.randn(n_chunks, seq_len, 3, generator=gen)
    starts = (th.rand(n_chunks, seq_len, generator=gen) < p_start).float()
    h0, c0 = th.randn(n_chunks, 8, generator=gen), th.randn(n_chunks, 8, generator=gen)
    return inputs, starts, h0, c0


@pytest.mark.parametrize(("p_start", "seed"), [(0.0, 0), (0.2, 1), (0.5, 2), (1.0, 3)])
def test_packed_sequences_equal_step_by_step_loop(p_start: float, seed: int) -> None:
    th.manual_seed(seed)
    lstm = nn.LSTM(3, 8, batch_first=True)
    inputs, starts, h0, c0 = _random_chunks(6, 9, p_start, seed)
    if p_start == 0.2:
        starts[2, 0] = 1.0  # a chunk that begins with a reset
        starts[3, -1] = 1.0  # a one-step segment at the end of a chunk
    inputs.requires_grad_(True)

    packed = lstm_over_chunks(lstm, inputs, starts, h0, c0)
    weights = th.randn_like(packed)
    (packed * weights).sum().backward()
    packed_grads = [inputs.grad.clone(), *(p.grad.clone() for p in lstm.parameters())]
    inputs.grad = None
    lstm.zero_grad()

    looped = lstm_step_by_step(lstm, inputs, starts, h0, c0)
    (looped * weights).sum().backward()
    looped_grads = [inputs.grad, *(p.grad for p in lstm.parameters())]

    assert th.allclose(packed, looped, atol=1e-6)
    for got, expected in zip(packed_grads, looped_grads, strict=True):
        assert th.allclose(got, expected, atol=1e-5)


def test_episode_start_makes_outputs_independent_of_history() -> None:
    th.manual_seed(0)
    lstm = nn.LSTM(3, 8, batch_first=True)
    gen = th.Generator().manual_seed(5)
    new_episode = th.randn(1, 6, 3, generator=gen)
    # Two different histories (and stored states) before the same new episode at t = 4.
    histories = [th.randn(1, 4, 3, generator=gen) for _ in range(2)]
    starts = th.zeros(1, 10)
    starts[0, 4] = 1.0
    outputs = [
        lstm_over_chunks(
            lstm,
            th.cat([history, new_episode], dim=1),
            starts,
            th.randn(1, 8, generator=gen),
            th.randn(1, 8, generator=gen),
        )
        for history in histories
    ]
    assert not th.allclose(outputs[0][:, :4], outputs[1][:, :4])
    assert th.allclose(outputs[0][:, 4:], outputs[1][:, 4:], atol=1e-6)


@pytest.mark.parametrize("p_start", [0.0, 0.2])
def test_lstms_over_chunks_equal_each_lstm_alone(p_start: float) -> None:
    """Several LSTMs sharing the segmentation give each LSTM's own outputs and gradients."""
    policy = make_policy(BOX_ACTIONS)
    gen = th.Generator().manual_seed(3)
    inputs = th.randn(5, 6, 3, generator=gen)
    starts = (th.rand(5, 6, generator=gen) < p_start).float()
    h0, c0 = th.randn(2, 5, policy.state_size, generator=gen)
    heads = th.randn(2, policy.hidden_size, generator=gen)
    together = lstms_over_chunks(policy.lstms, inputs, starts, h0, c0)
    sum((out * head).sum() for out, head in zip(together, heads, strict=True)).backward()
    grads = [p.grad.clone() for lstm in policy.lstms for p in lstm.parameters()]
    policy.zero_grad()
    alone, size = [], policy.hidden_size
    for k, (lstm, head) in enumerate(zip(policy.lstms, heads, strict=True)):
        units = slice(k * size, (k + 1) * size)
        out = lstm_over_chunks(lstm, inputs, starts, h0[:, units], c0[:, units])
        (out * head).sum().backward()
        alone.append(out.detach())
    for a, b in zip(together, alone, strict=True):
        assert th.allclose(a, b, atol=1e-6)
    expected = [p.grad for lstm in policy.lstms for p in lstm.parameters()]
    for g1, g2 in zip(grads, expected, strict=True):
        assert th.allclose(g1, g2, atol=1e-6)
