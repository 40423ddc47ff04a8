"""Named sets of :class:`~tradingbot.algo.config.PPOConfig` options, shared by the benchmarks
(``benchmarks/throughput.py --full-features``) and the tests (the memory test of
tests/test_ppo.py runs with the all-options set plus the scaler and 2 microbatches)."""

from __future__ import annotations

# Every risk and stability option of the algorithm config on: the CVaR objective, DSAC-T
# weights with target clipping, value clipping, exact-KL early stop, the adaptive KL penalty,
# dual clip, the entropy schedule with its boost and AWR. Measured alone on top of it: the
# variance gradient scaler (an optimizer option, with its own overhead benchmark) and gradient
# accumulation (a memory-for-speed trade by design). The robust regularizer is a separate,
# deliberately costly training mode and is not part of this set.
ALL_RISK_AND_STABILITY: dict[str, object] = {
    "risk": {"mode": "mean_cvar", "alpha": 0.05, "weight": 0.1},
    "critic_adjust": {"mode": "dsac_t", "target_clip": True},
    "value_clip": {"mode": "mean_shift"},
    "clip_range_vf": 0.5,
    "target_kl": 0.05,
    "kl_early_stop": "exact",
    "kl_penalty": True,
    "dual_clip": 3.0,
    "entropy": {"final": 0.0, "boost_factor": 1.05, "minimum": 0.0},
    "awr": {"enabled": True},
}
GRAD_SCALER_ON: dict[str, object] = {"grad_scaler": {"enabled": True}}
