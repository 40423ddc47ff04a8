"""What the recurrent actor-critic returns: one rollout step's outputs (:class:`PolicyStep`)
and the training-time evaluation of stored actions (:class:`SequenceEvaluation`)."""

from __future__ import annotations

from typing import NamedTuple

import torch as th

from tradingbot.algo.fast.inference import LSTMStates


class PolicyStep(NamedTuple):
    """Output of one rollout step for a batch of environments.

    ``action`` is what the env receives (squashed into the Box, or a Discrete index);
    ``raw_action`` is what the buffer stores (the pre-squash Gaussian sample, or the index as
    float); ``quantiles`` (batch, n_critics, n_quantiles) and ``value`` (batch,) are in the
    critic's normalized return units; ``dist_params`` are mean and std concatenated (Box; the
    per-state std under gSDE) or logits (Discrete)."""

    action: th.Tensor
    raw_action: th.Tensor
    log_prob: th.Tensor
    value: th.Tensor
    quantiles: th.Tensor
    dist_params: th.Tensor
    states: LSTMStates


class SequenceEvaluation(NamedTuple):
    """Training-time evaluation of stored actions over sequence chunks, flattened to
    (chunks * seq_len, ...)."""

    log_prob: th.Tensor
    entropy: th.Tensor
    quantiles: th.Tensor
    dist_params: th.Tensor
