"""Oracle-market benchmark: how much of a known edge does DistributionalPPO capture?

The synthetic market with ``data.synthetic.predictability = p > 0`` has an observable AR(1)
signal ``s_t`` (feature ``signal``) that shifts the next bar's expected open-to-close log return
by ``p * s_t * sigma``. Before costs the best position is ``sign(s_t)``; after costs the best
is a no-trade band around zero. The oracle's Sharpe is measured by simulation: the oracle
policies are run through the same simulator (:func:`run_backtest`), on the same out-of-sample
test split, with the same costs as the agent:

- ``sign``: always hold ``sign(s_t)``;
- ``band``: hold ``sign(s_t)`` but only trade when ``|s_t| > threshold`` (else keep the old
  position), the threshold chosen on the *train* split from a small grid.

The oracle is the better of the two on the test split (the harder target for the agent).
The agent is trained on the train split and run deterministically over the test split of each
instrument; Sharpe (annualized, after costs) is averaged over the instruments. The ratio agent
/ oracle is reported per seed, then its mean and 95% t-interval over the seeds. The market is
the same for every seed (``data.synthetic.seed``); the seed is ``run.seed`` (network init,
environment starts, action sampling).

    .venv/bin/python benchmarks/oracle.py                       # 5 seeds, configs/oracle.yaml
    .venv/bin/python benchmarks/oracle.py --seeds 0 --set run.total_timesteps=100000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from tradingbot.config import TradingConfig
from tradingbot.config_loading import load_config
from tradingbot.data.market import PreparedMarket, load_prepared
from tradingbot.evaluate.backtest import ConstantPolicy
from tradingbot.evaluate.oracle import (  # noqa: F401  (train_agent: robustness.py, ...)
    RandomPolicy,
    SignalPolicy,
    instrument_names,
    split_sharpe,
    train_agent,
)
from tradingbot.runtime import configure_process

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "oracle.yaml"
BAND_GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
SCALE_GRID = (0.5, 1.0, 2.0, 3.0, 5.0)


def oracle(market: PreparedMarket, cfg: TradingConfig) -> dict[str, Any]:
    """The oracle policies on the test split.

    - ``sign``: ``sign(s_t)``, the return-maximising position before costs
      (:func:`tradingbot.data.synthetic.oracle_positions`). It is also (almost exactly) the
      policy that maximizes the env's reward, log growth: the Kelly position
      ``E[r] / Var[r] = p * s_t / sigma`` (~20 s_t at p = 0.2, sigma ~1%) is clipped to +-1
      for all but the smallest ``|s_t|``;
    - ``band``: ``sign(s_t)`` traded only when ``|s_t| > threshold`` (cost-aware);
    - ``linear``: ``clip(s_t / scale, -1, 1)``: the expected return is linear in ``s_t`` and the
      risk is not, so a position proportional to the signal has a higher *Sharpe* than its sign
      (the mean-variance optimum ``w ~ E[r] / Var[r]`` without the leverage bound), at a lower
      return. It is the Sharpe-maximizing reference, not the reward-optimal policy.

    Thresholds and scales are chosen on the train split. The oracle (the target's denominator)
    is the better of ``sign`` and ``band`` on the test split; ``linear`` is reported as a second,
    stricter ratio.
    """

    def run(split: str, **kw: float) -> dict:
        return split_sharpe(
            lambda name: SignalPolicy(market, split, name, **kw), market, cfg, split
        )

    band_scores = {t: run("train", threshold=t)["sharpe"] for t in BAND_GRID}
    scale_scores = {c: run("train", scale=c)["sharpe"] for c in SCALE_GRID}
    threshold = max(band_scores, key=lambda t: band_scores[t])
    scale = max(scale_scores, key=lambda c: scale_scores[c])
    candidates = {
        "oracle sign(s)": run("test"),
        f"oracle band |s|>{threshold}": run("test", threshold=threshold),
    }
    best = max(candidates, key=lambda k: candidates[k]["sharpe"])
    linear_name = f"Sharpe-max reference clip(s/{scale})"
    candidates[linear_name] = run("test", scale=scale)
    return {
        "candidates": candidates,
        "band_scores": band_scores,
        "scale_scores": scale_scores,
        "oracle": candidates[best],
        "oracle_name": best,
        "linear": candidates[linear_name],
    }


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return mean, mean - half, mean + half


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)

    cfg = load_config(args.config, args.overrides)
    configure_process(cfg.run)
    market = load_prepared(cfg.data, window=cfg.env.window)
    test = market.splits["test"]
    syn = cfg.data.synthetic
    print(
        f"oracle market: {syn.n_instruments} instruments x {syn.n_bars} bars, predictability "
        f"{syn.predictability}, costs {cfg.env.commission_bps}+{cfg.env.slippage_bps} bp, "
        f"test {test.start.date()}..{test.end.date()}, {cfg.run.total_timesteps} steps/seed"
    )
    o = oracle(market, cfg)
    flat = split_sharpe(lambda n: ConstantPolicy(0.0, _box()), market, cfg, "test")
    rand = split_sharpe(lambda n: RandomPolicy(12345), market, cfg, "test")
    oracle_sharpe = o["oracle"]["sharpe"]
    linear_sharpe = o["linear"]["sharpe"]
    print(
        "train-split Sharpe by band threshold: "
        + ", ".join(f"{t}: {v:.2f}" for t, v in o["band_scores"].items())
    )
    print(
        "train-split Sharpe by linear scale:   "
        + ", ".join(f"{c}: {v:.2f}" for c, v in o["scale_scores"].items())
    )

    rows = []
    for name, r in (
        *o["candidates"].items(),
        ("flat", flat),
        ("random (seed 12345)", rand),
    ):
        rows.append(
            (
                name,
                r["sharpe"],
                r["sharpe"] / oracle_sharpe,
                r["sharpe"] / linear_sharpe,
                r["corr_sign_signal"],
                r["turnover"],
                r["exposure"],
                float("nan"),
            )
        )
    ratios, lin_ratios, sharpes = [], [], []
    for seed in args.seeds:
        model, seconds = train_agent(cfg, market, seed)
        r = split_sharpe(lambda n, m=model: m, market, cfg, "test")
        ratio = r["sharpe"] / oracle_sharpe
        ratios.append(ratio)
        lin_ratios.append(r["sharpe"] / linear_sharpe)
        sharpes.append(r["sharpe"])
        rows.append(
            (
                f"agent seed {seed}",
                r["sharpe"],
                ratio,
                lin_ratios[-1],
                r["corr_sign_signal"],
                r["turnover"],
                r["exposure"],
                seconds,
            )
        )
        print(
            f"  seed {seed}: Sharpe {r['sharpe']:.2f} ratio {ratio:.2f} "
            f"corr {r['corr_sign_signal']:.2f} ({seconds:.0f}s)",
            flush=True,
        )

    print()
    print(
        "| policy | test Sharpe | / oracle | / Sharpe-max ref | corr(pos, sign s) | "
        "turnover/yr | exposure | train s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, sh, ratio, lin, corr, turn, expo, secs in rows:
        print(
            f"| {name} | {sh:.2f} | {ratio:.2f} | {lin:.2f} | {corr:.2f} | {turn:.1f} | "
            f"{expo:.2f} | " + ("" if np.isnan(secs) else f"{secs:.0f}") + " |"
        )
    mean, lo, hi = t_interval(ratios)
    smean, slo, shi = t_interval(sharpes)
    print()
    print(f"oracle = {o['oracle_name']}: test Sharpe {oracle_sharpe:.2f}")
    print(
        f"agent Sharpe: mean {smean:.2f}, 95% CI [{slo:.2f}, {shi:.2f}] over {len(sharpes)} seeds"
    )
    print(f"agent / oracle: mean {mean:.2f}, 95% CI [{lo:.2f}, {hi:.2f}] (target >= 0.8)")
    lmean, llo, lhi = t_interval(lin_ratios)
    print(
        f"agent / Sharpe-max reference ({linear_sharpe:.2f}): mean {lmean:.2f}, "
        f"95% CI [{llo:.2f}, {lhi:.2f}]"
    )
    return 0


def _box():
    from gymnasium import spaces

    return spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)


if __name__ == "__main__":
    sys.exit(main())
