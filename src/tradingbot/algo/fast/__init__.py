"""The speed machinery of DistributionalPPO, each piece beside the slow reference it must equal:

- :mod:`~tradingbot.algo.fast.flat`: every parameter and gradient as a view into one flat
  buffer (one fused Adam kernel, one-kernel norms and clips); reference: per-parameter Adam
  and ``torch.nn.utils.clip_grad_norm_`` (tests/test_fast_flat.py).
- :mod:`~tradingbot.algo.fast.inference`: the fused rollout step (both LSTMs in one cell
  step, actor and critic layers fused); reference: the policy's ``evaluate_sequences``
  (tests/test_fast_inference.py).
- :mod:`~tradingbot.algo.fast.sequence`: the LSTM over chunks with episode starts in one
  call over padded segments; reference: ``lstm_step_by_step`` (tests/test_fast_sequence.py).
- :mod:`~tradingbot.algo.fast.quantile_huber`: the quantile Huber loss with its backward
  written out; reference: sb3-contrib's ``quantile_huber_loss``
  (tests/test_fast_quantile_huber.py).
"""
