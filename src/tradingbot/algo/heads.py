"""The networks after the LSTMs of the recurrent actor-critic: the MLP trunk and the twin
quantile critic heads."""

from __future__ import annotations

import itertools
import math

import torch as th
from torch import nn
from torch.nn import functional as F


class TwinQuantileHead(nn.Module):
    """``n_critics`` independent MLP heads evaluated in one batched matmul per layer, each
    outputting monotone quantiles: first quantile plus a cumulative sum of softplus gaps."""

    def __init__(self, in_dim: int, net_arch: list[int], n_critics: int, n_quantiles: int) -> None:
        super().__init__()
        self.n_critics = n_critics
        sizes = [*net_arch, n_quantiles]
        # The first layer sees the same features for every critic: one wide Linear.
        self.first = nn.Linear(in_dim, n_critics * sizes[0])
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        n_layers = len(sizes) - 1
        for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            weight = th.empty(n_critics, fan_in, fan_out)
            gain = 1.0 if layer == n_layers - 1 else math.sqrt(2)
            for k in range(n_critics):
                nn.init.orthogonal_(weight[k], gain=gain)
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(th.zeros(n_critics, 1, fan_out)))
        nn.init.orthogonal_(self.first.weight, gain=math.sqrt(2) if net_arch else 1.0)
        nn.init.zeros_(self.first.bias)
        # Initial quantile gaps spread the quantiles over about 4 normalized units.
        gap = 4.0 / max(n_quantiles - 1, 1)
        with th.no_grad():
            last_bias = self.biases[-1] if len(self.biases) else None
            inverse_softplus_gap = math.log(math.expm1(gap))
            if last_bias is not None:
                last_bias[..., 1:] = inverse_softplus_gap
            else:
                self.first.bias.view(n_critics, -1)[:, 1:] = inverse_softplus_gap

    def forward(self, features: th.Tensor) -> th.Tensor:
        """Quantiles of every critic, shape (batch, n_critics, n_quantiles)."""
        x = self.first(features).view(-1, self.n_critics, self.first.out_features // self.n_critics)
        x = x.transpose(0, 1)
        for weight, bias in zip(self.weights, self.biases, strict=True):
            x = th.baddbmm(bias, th.tanh(x), weight)
        return self.monotone(x).transpose(0, 1).contiguous()

    @staticmethod
    def monotone(x: th.Tensor) -> th.Tensor:
        """Quantiles from the last layer's output: first value plus cumulative softplus gaps.

        One cumsum over the full, contiguous last dim: on CPU, softplus and cumsum over the
        strided ``x[..., 1:]`` slice are several times slower."""
        steps = th.cat([x[..., :1], F.softplus(x)[..., 1:]], dim=-1)
        return th.cumsum(steps, dim=-1)


def mlp(in_dim: int, net_arch: list[int]) -> nn.Sequential:
    """Linear + tanh layers of ``net_arch`` sizes, orthogonally initialized (gain sqrt 2)."""
    layers: list[nn.Module] = []
    for size in net_arch:
        linear = nn.Linear(in_dim, size)
        nn.init.orthogonal_(linear.weight, gain=math.sqrt(2))
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.Tanh()]
        in_dim = size
    return nn.Sequential(*layers)


def actor_critic_lstms(
    input_size: int, hidden_size: int, shared: bool
) -> tuple[nn.LSTM, nn.LSTM | None]:
    """The actor's LSTM and the critic's (None when ``shared``), initialized uniformly in
    +-1/sqrt(state size): the scale torch gives one LSTM of all the state's units, kept for
    the separate ones. Built in this order (actor, critic, then the uniform draws), which fixes
    the random stream."""
    actor = nn.LSTM(input_size, hidden_size, batch_first=True)
    critic = None if shared else nn.LSTM(input_size, hidden_size, batch_first=True)
    lstms = [actor] if critic is None else [actor, critic]
    bound = 1.0 / math.sqrt(len(lstms) * hidden_size)
    for lstm in lstms:
        for weight in lstm.parameters():
            nn.init.uniform_(weight, -bound, bound)
    return actor, critic
