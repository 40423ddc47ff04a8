"""CVaR from quantiles, Rockafellar-Uryasev shaping, and the risk modes on a two-armed bandit."""

from __future__ import annotations

import itertools
import math

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from scipy.stats import norm
from stable_baselines3.common.env_util import make_vec_env

from tradingbot.algo.losses import cvar_from_quantiles, quantile_at
from tradingbot.algo.ppo import DistributionalPPO
from tradingbot.algo.risk import dual_ascent, empirical_cvar, shape_advantages, state_var

ALPHA = 0.05


def exact_discrete_cvar(quantiles: np.ndarray, alpha: float) -> float:
    """Mean of the lowest alpha*N atoms, the next one weighted by the fractional part."""
    k = alpha * len(quantiles)
    total, remaining = 0.0, k
    for q in np.sort(quantiles):
        take = min(1.0, remaining)
        if take <= 0:
            break
        total += take * q
        remaining -= take
    return total / k


@pytest.mark.parametrize("n", [32, 51, 200])
def test_cvar_of_midpoint_normal_quantiles_matches_exact_discrete_value(n: int) -> None:
    quantiles = norm.ppf((np.arange(n) + 0.5) / n)
    expected = exact_discrete_cvar(quantiles, ALPHA)
    got = cvar_from_quantiles(th.tensor(quantiles, dtype=th.float64), ALPHA)
    assert float(got) == pytest.approx(expected, abs=1e-12)
    # Shuffled input: sorted first. Batched: per row.
    shuffled = th.tensor(np.random.default_rng(0).permutation(quantiles))
    batch = th.stack([shuffled, shuffled + 1.0])
    np.testing.assert_allclose(
        cvar_from_quantiles(batch, ALPHA).numpy(), [expected, expected + 1.0], atol=1e-12
    )


def test_cvar_fractional_weight_by_hand() -> None:
    # alpha * N = 0.25 * 6 = 1.5: (q0 + 0.5 q1) / 1.5
    q = th.tensor([-3.0, -1.0, 0.0, 1.0, 2.0, 5.0], dtype=th.float64)
    assert float(cvar_from_quantiles(q, 0.25)) == pytest.approx((-3.0 - 0.5) / 1.5)
    assert float(cvar_from_quantiles(q, 1.0)) == pytest.approx(float(q.mean()))
    # A whole alpha * N (0.5 * 4 = 2) takes no part of the next quantile, even an infinite one.
    upper_inf = th.tensor([-1.0, 0.0, math.inf, math.inf], dtype=th.float64)
    assert float(cvar_from_quantiles(upper_inf, 0.5)) == -0.5


def test_cvar_of_midpoint_normal_quantiles_approaches_continuous_value() -> None:
    continuous = -norm.pdf(norm.ppf(ALPHA)) / ALPHA  # -2.0627
    assert continuous == pytest.approx(-2.0627, abs=1e-4)
    errors = []
    for n in [32, 200, 2000, 20000]:
        quantiles = th.tensor(norm.ppf((np.arange(n) + 0.5) / n), dtype=th.float64)
        errors.append(abs(float(cvar_from_quantiles(quantiles, ALPHA)) - continuous))
    assert all(b < a for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < 2e-3, errors


def test_quantile_at_interpolates_between_midpoints() -> None:
    q = th.tensor([0.0, 1.0, 2.0, 3.0])  # levels 0.125, 0.375, 0.625, 0.875
    assert float(quantile_at(q, 0.25)) == pytest.approx(0.5)
    assert float(quantile_at(q, 0.05)) == pytest.approx(0.0)  # clamped at the ends
    assert float(quantile_at(q, 0.375)) == pytest.approx(1.0)
    assert float(quantile_at(q, 1.0)) == 3.0  # clamped at the top level too
    assert float(quantile_at(q, 0.75)) == pytest.approx(2.5)


def test_shaping_subtracts_ru_penalty_below_var() -> None:
    returns = th.tensor([[-2.0, 0.5, 3.0]])
    advantages = th.tensor([[0.1, 0.2, 0.3]])
    # One critic whose quantiles make VaR_0.25 = 0.5 (levels 0.125, 0.375 -> 0 and 1).
    quantiles = th.tensor([0.0, 1.0, 2.0, 3.0]).expand(1, 3, 1, 4)
    shaped, penalty = shape_advantages(advantages, returns, quantiles, alpha=0.25, weight=0.5)
    expected_penalty = th.tensor([[0.5 / 0.25 * 2.5, 0.0, 0.0]])
    assert th.allclose(penalty, expected_penalty)
    assert th.allclose(shaped, advantages - expected_penalty)
    # weight 0 is risk-neutral
    assert th.equal(shape_advantages(advantages, returns, quantiles, 0.25, 0.0)[0], advantages)


def test_nu_averages_the_twin_critics_quantile_by_quantile() -> None:
    """nu = VaR_alpha of the critics' quantiles averaged level by level, then sorted. Critic A
    [3, 0, 2, 1] (not monotone), critic B [4, 5, 6, 7]: averaged [3.5, 2.5, 4, 4], sorted
    [2.5, 3.5, 4, 4]; alpha = 0.25 sits halfway between levels 0.125 and 0.375: nu = 3.0.
    Other aggregations give other values: mean of the critics' VaRs (0.5 + 4.5) / 2 = 2.5,
    the lower critic's VaR 0.5, the pooled eight atoms' VaR 1.5."""
    quantiles = th.tensor([[3.0, 0.0, 2.0, 1.0], [4.0, 5.0, 6.0, 7.0]]).reshape(1, 1, 2, 4)
    assert float(state_var(quantiles, 0.25)) == pytest.approx(3.0)
    # Sorted critics: quantile averaging equals the mean of the VaRs, not the min or the pool.
    ordered = th.tensor([[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]).reshape(1, 1, 2, 4)
    assert float(state_var(ordered, 0.25)) == pytest.approx(2.5)
    # Any leading shape: (B, K, N) quantiles of a batch give one nu per sample.
    assert state_var(quantiles.reshape(1, 2, 4), 0.25).tolist() == pytest.approx([3.0])
    # Through the shaping: G = 1 lies 2 below nu = 3: penalty (0.5 / 0.25) * 2 = 4.
    _, penalty = shape_advantages(th.zeros(1, 1), th.ones(1, 1), quantiles, 0.25, 0.5)
    assert float(penalty) == pytest.approx(4.0)


def test_empirical_cvar_and_dual_ascent() -> None:
    samples = th.tensor([4.0, -1.0, 2.0, float("nan"), 0.0])
    assert empirical_cvar(samples, 0.5) == pytest.approx((-1.0 + 0.0) / 2)
    assert math.isnan(empirical_cvar(th.tensor([float("nan")]), 0.5))
    assert empirical_cvar(th.tensor([-3.0]), 0.5) == -3.0  # one sample is its own CVaR
    assert dual_ascent(0.2, cvar=-1.0, limit=0.0, lr=0.5, max_multiplier=10.0) == 0.7
    # lr x (limit - cvar) = 0.5 x 4 = 2 (a step of lr / 4 would give 0.325)
    assert dual_ascent(0.2, cvar=-3.0, limit=1.0, lr=0.5, max_multiplier=10.0) == 2.2
    assert dual_ascent(0.2, cvar=1.0, limit=0.0, lr=0.5, max_multiplier=10.0) == 0.0
    assert dual_ascent(9.9, cvar=-5.0, limit=0.0, lr=1.0, max_multiplier=10.0) == 10.0
    assert dual_ascent(0.3, cvar=math.nan, limit=0.0, lr=1.0, max_multiplier=10.0) == 0.3


# --------------------------------------------------------------------------------------------
# Two-armed bandit: arm 0 pays 0.9 surely; arm 1 pays -TAIL with probability P and otherwise
# (1 + P * TAIL) / (1 - P), so its mean is 1.0 with a heavy lower tail.
TAIL, P, BANDIT_ALPHA = 2.0, 0.1, 0.2
SAFE = 0.9
HIGH = (1.0 + P * TAIL) / (1.0 - P)


class RiskyBandit(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        if int(action) == 0:
            reward = SAFE
        else:
            reward = -TAIL if self.np_random.random() < P else HIGH
        return np.zeros(1, dtype=np.float32), float(reward), True, False, {}


def analytic_arm(weight: float) -> int:
    """argmax over arms of E[G] + weight * CVaR_alpha(G)."""
    # Risky arm: the lowest alpha = 0.2 holds P = 0.1 at -TAIL and 0.1 at HIGH.
    tail = min(P, BANDIT_ALPHA)
    risky_cvar = (tail * -TAIL + (BANDIT_ALPHA - tail) * HIGH) / BANDIT_ALPHA
    values = [SAFE + weight * SAFE, 1.0 + weight * risky_cvar]
    return int(np.argmax(values))


def train_bandit(risk: dict, updates: int = 30) -> tuple[float, list[float], DistributionalPPO]:
    """Train on the bandit; return P(risky arm), the per-update empirical CVaR, the model."""
    th.set_num_threads(1)
    env = make_vec_env(RiskyBandit, n_envs=8, seed=0)
    model = DistributionalPPO(
        "MlpLstmPolicy",
        env,
        seed=0,
        n_steps=32,
        batch_size=64,
        seq_len=8,
        n_epochs=4,
        learning_rate=3e-3,
        lstm_hidden_size=8,
        net_arch=[16],
        n_quantiles=16,
        risk={"alpha": BANDIT_ALPHA, **risk},
    )
    cvars = []
    for _ in range(updates):
        model.learn(256, reset_num_timesteps=False)
        cvars.append(model.logger.name_to_value["train/cvar_empirical"])
    step = model.policy.step(th.zeros(1, 1), model.policy.initial_state(1), th.ones(1))
    return float(th.softmax(step.dist_params[0], -1)[1]), cvars, model


@pytest.mark.parametrize(
    ("mode", "weight"), [("none", 0.0), ("mean_cvar", 0.02), ("mean_cvar", 0.5)]
)
def test_bandit_chooses_the_arm_of_mean_plus_lambda_cvar(mode: str, weight: float) -> None:
    """Risk-neutral and a small lambda (1 + 0.02 CVaR = 0.993 > 0.918) take the risky arm;
    lambda = 0.5 (risky 1 + 0.5 * -0.33 = 0.83 < safe 1.35) takes the safe arm."""
    p_risky, _, _ = train_bandit({"mode": mode, "weight": weight})
    if analytic_arm(weight) == 1:
        assert p_risky > 0.8, p_risky
    else:
        assert p_risky < 0.3, p_risky
    assert analytic_arm(0.0) == 1 and analytic_arm(0.5) == 0


def test_cvar_constraint_keeps_cvar_above_limit() -> None:
    """Risk-neutral, the rollout CVaR_0.2 sits near the risky arm's -0.33; with the constraint
    CVaR >= 0 the multiplier rises and the CVaR (mean over the last 10 updates) stays above the
    limit up to rollout noise."""
    limit = 0.0
    _, neutral_cvars, _ = train_bandit({"mode": "none"})
    p_risky, cvars, model = train_bandit(
        {"mode": "cvar_constraint", "weight": 0.0, "cvar_limit": limit, "dual_lr": 1.0}
    )
    assert np.mean(neutral_cvars[-10:]) < limit - 0.2
    assert np.mean(cvars[-10:]) > limit - 0.1, cvars
    assert 0.05 < p_risky < 0.95  # a mixed policy: the constrained optimum is on the boundary
    # The last update logged the multiplier it used and the rollout's CVaR; the multiplier
    # after it is one projected dual-ascent step from them (dual_lr 1, limit 0, bound 10).
    logged = model.logger.name_to_value
    expected = min(max(logged["train/risk_weight"] + 1.0 * (limit - cvars[-1]), 0.0), 10.0)
    assert model.train_state.risk_multiplier == pytest.approx(expected, rel=1e-12)
    assert model.train_state.risk_multiplier != logged["train/risk_weight"]
