"""The networks after the LSTMs of the recurrent actor-critic: the MLP trunk and the twin
quantile critic heads, with their hidden activation (``PPOConfig.activation``) and
initialization (``PPOConfig.ortho_init``)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch as th
from torch import nn
from torch.nn import functional as F

# The hidden layers' activations by ``PPOConfig.activation`` name: every path (the modules,
# the fused rollout step) looks the function up here, so none can keep another.
ACTIVATIONS: dict[str, Callable[[th.Tensor], th.Tensor]] = {"tanh": th.tanh, "relu": th.relu}
ACTIVATION_MODULES: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


def default_linear_init_(weight: th.Tensor, bias: th.Tensor, fan_in: int) -> None:
    """Draw ``weight`` and ``bias`` in place as ``nn.Linear.reset_parameters`` does (PyTorch's
    default: both uniform in +-1/sqrt(fan_in); kaiming-uniform with ``a = sqrt(5)`` is that
    bound), for weights stored (fan_in, fan_out) that torch's fan rule would read the wrong way
    round."""
    bound = 1.0 / math.sqrt(fan_in)
    nn.init.uniform_(weight, -bound, bound)
    nn.init.uniform_(bias, -bound, bound)


class TwinQuantileHead(nn.Module):
    """``n_critics`` independent MLP heads evaluated in one batched matmul per layer, each
    outputting monotone quantiles: first quantile plus a cumulative sum of softplus gaps.

    ``activation`` (``'tanh'`` or ``'relu'``) follows every hidden layer, not the output.
    ``ortho_init``: orthogonal weights (gain sqrt 2, the output layer's 1) and zero biases;
    ``False``: PyTorch's default init of every layer (:func:`default_linear_init_`). Either
    way the output bias of the gaps starts at the inverse softplus of an even spread, so the
    quantiles are apart and monotone from the start."""

    def __init__(
        self,
        in_dim: int,
        net_arch: list[int],
        n_critics: int,
        n_quantiles: int,
        activation: str,
        ortho_init: bool,
    ) -> None:
        super().__init__()
        self.n_critics = n_critics
        self.activation = ACTIVATIONS[activation]
        sizes = [*net_arch, n_quantiles]
        # The first layer sees the same features for every critic: one wide Linear.
        self.first = nn.Linear(in_dim, n_critics * sizes[0])
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        n_layers = len(sizes) - 1
        for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            weight = th.empty(n_critics, fan_in, fan_out)
            bias = th.zeros(n_critics, 1, fan_out)
            gain = 1.0 if layer == n_layers - 1 else math.sqrt(2)
            for k in range(n_critics):
                if ortho_init:
                    nn.init.orthogonal_(weight[k], gain=gain)
                else:
                    default_linear_init_(weight[k], bias[k], fan_in)
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(bias))
        if ortho_init:  # else nn.Linear's own default init stands
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
            x = th.baddbmm(bias, self.activation(x), weight)
        return self.monotone(x).transpose(0, 1).contiguous()

    @staticmethod
    def monotone(x: th.Tensor) -> th.Tensor:
        """Quantiles from the last layer's output: first value plus cumulative softplus gaps.

        One cumsum over the full, contiguous last dim: on CPU, softplus and cumsum over the
        strided ``x[..., 1:]`` slice are several times slower."""
        steps = th.cat([x[..., :1], F.softplus(x)[..., 1:]], dim=-1)
        return th.cumsum(steps, dim=-1)


def mlp(in_dim: int, net_arch: list[int], activation: str, ortho_init: bool) -> nn.Sequential:
    """Linear + ``activation`` (``'tanh'`` or ``'relu'``) layers of ``net_arch`` sizes,
    orthogonally initialized (gain sqrt 2, zero biases), or with PyTorch's default init when
    not ``ortho_init``."""
    layers: list[nn.Module] = []
    for size in net_arch:
        linear = nn.Linear(in_dim, size)
        if ortho_init:
            nn.init.orthogonal_(linear.weight, gain=math.sqrt(2))
            nn.init.zeros_(linear.bias)
        layers += [linear, ACTIVATION_MODULES[activation]()]
        in_dim = size
    return nn.Sequential(*layers)


def actor_output_layer(in_dim: int, out_dim: int, ortho_init: bool) -> nn.Linear:
    """The actor's output layer (Gaussian mean or logits). Under ``ortho_init`` orthogonal
    with gain 0.01 and a zero bias, so the first policy is near uniform / centred (as SB3
    does); else PyTorch's default init, as SB3's ``ortho_init=False`` leaves it."""
    layer = nn.Linear(in_dim, out_dim)
    if ortho_init:
        nn.init.orthogonal_(layer.weight, gain=0.01)
        nn.init.zeros_(layer.bias)
    return layer


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
