"""Run configuration: pydantic models that are the single home of every default.

A config is loaded from YAML, then ``--set a.b=value`` overrides are applied, then the whole
tree is validated. Unknown keys and bad values raise :class:`ConfigError` naming the key and
what is allowed.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from tradingbot.algo.config import PPOConfig
from tradingbot.config_base import StrictModel
from tradingbot.config_pbt import PBTConfig
from tradingbot.config_portfolio import PortfolioConfig
from tradingbot.errors import (
    ConfigError,  # noqa: F401  (re-exported: callers import it from here)
    short_repr,
)


class SyntheticConfig(StrictModel):
    """Seeded regime-switching market (see :mod:`tradingbot.data.synthetic`)."""

    n_instruments: int = Field(1, ge=1)
    n_bars: int = Field(2520, ge=50)
    seed: int = 0
    start: date = date(2000, 1, 3)
    # Strength of the predictable component: the next bar's expected log return is
    # predictability * signal_t * bar volatility, with signal_t observable at bar t.
    predictability: float = Field(0.0, ge=0.0, le=1.0)


class FeatureConfig(StrictModel):
    """Causal features computed per instrument; the value at bar t uses bars <= t only."""

    return_windows: list[int] = Field(default_factory=lambda: [1, 5, 20])
    volatility_window: int = Field(20, ge=2)
    volume_window: int = Field(20, ge=2)
    # auto: VIX level/change are added when VIX covers every bar of the instrument.
    vix: Literal["auto", "on", "off"] = "auto"
    # Adds the synthetic market's observable signal column as a feature when present.
    include_signal: bool = True
    clip: float = Field(10.0, gt=0.0)
    # base: the features above. long_horizon: also 60/120/250-bar returns, distance from the
    # 50/200-bar moving averages in volatility units, 20/60-bar volatility and their ratio, and
    # drawdown from the 250-bar high (tradingbot.data.features.long_horizon_features).
    set: Literal["base", "long_horizon"] = "base"

    @model_validator(mode="after")
    def _check_windows(self) -> FeatureConfig:
        if not self.return_windows or any(w < 1 for w in self.return_windows):
            raise ValueError(f"return_windows must be positive integers, got {self.return_windows}")
        return self


class SplitConfig(StrictModel):
    """Date splits: train / validation / test.

    Either dates (``train_end``, ``validation_end``: the last day of each split) or fractions of
    the common date range (used when the dates are not given).
    """

    train_end: date | None = None
    validation_end: date | None = None
    train_fraction: float = Field(0.7, gt=0.0, lt=1.0)
    validation_fraction: float = Field(0.15, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if (self.train_end is None) != (self.validation_end is None):
            raise ValueError("give both train_end and validation_end, or neither")
        if self.train_end is not None and self.validation_end is not None:
            if self.validation_end <= self.train_end:
                raise ValueError(
                    f"validation_end ({self.validation_end}) must be after "
                    f"train_end ({self.train_end})"
                )
        if self.train_fraction + self.validation_fraction >= 1.0:
            raise ValueError(
                f"train_fraction + validation_fraction must be < 1 "
                f"(got {self.train_fraction} + {self.validation_fraction})"
            )
        return self


class WalkForwardConfig(StrictModel):
    """Walk-forward folds: consecutive test windows, each trained on the data before it."""

    first_test_start: date | None = None
    test_length: str = "365D"  # a pandas offset alias: "365D", "1YE", "90D", ...
    n_folds: int | None = Field(None, ge=1)
    mode: Literal["expanding", "rolling"] = "expanding"
    train_length: str | None = None  # required for rolling folds
    embargo_bars: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> WalkForwardConfig:
        if self.mode == "rolling" and self.train_length is None:
            raise ValueError("mode 'rolling' needs train_length (e.g. '1825D')")
        return self


class DataConfig(StrictModel):
    """Where the bars come from and how they are turned into features and splits."""

    source: str = "sp500"  # a bundled dataset name or a CSV/Parquet path
    instruments: list[str] | None = None  # None: all instruments of the source
    # More data per agent: bundled datasets or files whose instruments join the training
    # episodes only, each normalized on its own training bars; backtests, signals and the
    # walk-forward's tables use source's instruments (tradingbot.data.market.prepare_market).
    train_sources: list[str] = Field(default_factory=list)
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    walk_forward: WalkForwardConfig = Field(default_factory=WalkForwardConfig)
    # What numeric timestamps in a user file count since 1970-01-01 UTC. None: numbers are
    # refused (read as nanoseconds, an epoch in seconds would put every bar on 1970-01-01).
    timestamp_unit: Literal["s", "ms", "us", "ns"] | None = None


class SizingConfig(StrictModel):
    """How an action becomes a target position (:mod:`tradingbot.env.sizing`).

    ``position``: the action is the target position. ``vol_scaled``: the action is a risk
    budget; the position is action x ``target_volatility`` / sigma_t, clipped to +-``cap``, with
    sigma_t the annualized standard deviation of the last ``window`` log returns up to bar t.
    """

    mode: Literal["position", "vol_scaled"] = "position"
    target_volatility: float = Field(0.10, gt=0.0)  # annual
    window: int = Field(20, ge=2)  # bars of close-to-close log returns in sigma_t
    cap: float = Field(1.0, gt=0.0, le=1.0)  # the largest |position|


class EnvConfig(StrictModel):
    """The market simulator (see :mod:`tradingbot.env.simulator`)."""

    n_envs: int = Field(8, ge=1)
    episode_length: int | None = Field(256, ge=1)  # None: run until the split's data ends
    action: Literal["continuous", "discrete"] = "continuous"
    long_only: bool = False
    fill: Literal["next_open", "next_close"] = "next_open"
    commission_bps: float = Field(1.0, ge=0.0)
    slippage_bps: float = Field(2.0, ge=0.0)
    initial_equity: float = Field(1.0, gt=0.0)
    ruin_floor: float = Field(0.2, ge=0.0, lt=1.0)  # fraction of initial equity
    window: int = Field(1, ge=1)  # bars of features in one observation
    # Annual interest earned on the uninvested part of equity, 1 - |position| (0.02 = 2% a
    # year), per bar at (1 + rate) ** (1 / bars per year) - 1 by the data's calendar.
    cash_rate: float = Field(0.0, ge=-0.5, le=1.0)
    sizing: SizingConfig = Field(default_factory=SizingConfig)


class RunConfig(StrictModel):
    """Where a run is written, how it is seeded and how long it trains."""

    seed: int = 0
    out_dir: Path = Path("runs")
    name: str | None = None
    total_timesteps: int = Field(200_000, ge=1)
    # Process settings, applied by the entry points (CLI, Ray tasks and trainables,
    # benchmarks) through tradingbot.runtime.configure_process, never by library functions.
    torch_threads: int = Field(1, ge=1)  # small LSTMs run fastest on one thread
    # glibc keeps freed memory for reuse instead of page-faulting it in again every update
    # (tradingbot.runtime); the process then does not shrink after its peak.
    retain_freed_memory: bool = True
    checkpoint_every: int = Field(10, ge=1)  # updates between checkpoints
    keep_checkpoints: int = Field(3, ge=1)  # the newest this many are kept
    # A seed ensemble: one member trained per seed, in turn; the run's policy holds the mean of
    # the members' positions (tradingbot.evaluate.ensemble). None: one policy seeded by `seed`.
    # With seeds, `seed` is the first member's (leave it out, or give that value); a list of
    # one seed is the plain run with that seed.
    seeds: list[int] | None = Field(None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _seed_is_first_member(cls, raw: Any) -> Any:
        seeds = raw.get("seeds") if isinstance(raw, dict) else None
        if not isinstance(seeds, list) or not seeds or type(seeds[0]) is not int:
            return raw  # the field's own validation names what is wrong
        if "seed" in raw and raw["seed"] != seeds[0]:
            raise ValueError(
                f"run.seed ({short_repr(raw['seed'])}) and run.seeds ({short_repr(seeds)}) "
                "disagree: with run.seeds, run.seed is the first member's seed; leave run.seed "
                "out (or set it to run.seeds[0])"
            )
        return {**raw, "seed": seeds[0], "seeds": seeds if len(seeds) > 1 else None}

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        repeated = sorted({s for s in seeds or [] if seeds.count(s) > 1})  # type: ignore[union-attr]
        if repeated:
            raise ValueError(f"each member needs its own seed; repeated: {repeated}")
        return seeds

    @field_validator("name")
    @classmethod
    def _one_path_component(cls, name: str | None) -> str | None:
        # The run directory is out_dir / name: a name with a separator or ".." would put it
        # (and every file the run writes) somewhere else.
        if name is None:
            return name
        if name in ("", ".", "..") or "/" in name or "\\" in name or any(ord(c) < 32 for c in name):
            raise ValueError(
                "a run name is one directory name (no '/', '\\', '..' or control characters)"
            )
        return name


class BaselineConfig(StrictModel):
    """Parameters of the rule baselines (:mod:`tradingbot.evaluate.baselines`), fixed in advance.

    Textbook values, never tuned on any split: a 10% annual volatility target over 20 bars of
    past closes with the position capped at 1, a 200-bar moving-average trend rule, and 12-1
    time-series momentum (the return over the last 252 bars, skipping the latest 21).
    """

    target_volatility: float = Field(0.10, gt=0.0)  # annualized
    volatility_window: int = Field(20, ge=2)  # bars of close-to-close log returns
    volatility_cap: float = Field(1.0, gt=0.0, le=1.0)  # the largest position it takes
    trend_window: int = Field(200, ge=2)  # bars in the moving average of closes
    momentum_lookback: int = Field(252, ge=2)  # bars from the start of the momentum return
    momentum_skip: int = Field(21, ge=0)  # most recent bars left out of it

    @model_validator(mode="after")
    def _check(self) -> BaselineConfig:
        if self.momentum_skip >= self.momentum_lookback:
            raise ValueError(
                f"momentum_skip ({self.momentum_skip}) must be smaller than "
                f"momentum_lookback ({self.momentum_lookback})"
            )
        return self


class StatisticsConfig(StrictModel):
    """Statistics over the market path (:mod:`tradingbot.evaluate.statistics`).

    ``block_length`` None: the stationary bootstrap's mean block length is chosen by
    ``arch.bootstrap.optimal_block_length`` (Politis & White) on the series compared.
    """

    bootstrap_reps: int = Field(2000, ge=100)
    block_length: float | None = Field(None, ge=1.0)
    seed: int = 0
    level: float = Field(0.95, gt=0.0, lt=1.0)  # confidence level of every interval


class EvaluationConfig(StrictModel):
    """Walk-forward evaluation: an agent per fold and seed (folds in ``data.walk_forward``)."""

    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    # Bars before the first scored bar that the LSTM runs over, in backtests and signals alike
    # (tradingbot.evaluate.warmup): the same decisions on the same bars from both commands.
    warmup_bars: int = Field(250, ge=0)
    baselines: BaselineConfig = Field(default_factory=BaselineConfig)
    statistics: StatisticsConfig = Field(default_factory=StatisticsConfig)
    # The selection.json that records the configurations tried to arrive at this config: copied
    # into the run directory at training, where backtest reads it for the deflated Sharpe ratio.
    # A relative path is relative to the working directory. None: one configuration.
    selection_file: Path | None = None
    # Walk-forward jobs (one per fold and seed, Ray tasks) running at once; None: one per CPU of
    # the local Ray or of the cluster joined with --address. Results do not depend on it.
    workers: int | None = Field(None, ge=1)
    # Retries of a fold x seed job whose process dies or that raises, before the run reports it.
    max_retries: int = Field(2, ge=0)


class TradingConfig(StrictModel):
    """The whole configuration of a run."""

    data: DataConfig = Field(default_factory=DataConfig)
    env: EnvConfig = Field(default_factory=EnvConfig)
    algo: PPOConfig = Field(default_factory=PPOConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    pbt: PBTConfig = Field(default_factory=PBTConfig)
    # None: single-instrument runs; a section: the K-asset portfolio environment and policy.
    portfolio: PortfolioConfig | None = None

    @model_validator(mode="after")
    def _one_seed(self) -> TradingConfig:
        if self.algo.seed is not None:
            raise ValueError(
                f"algo.seed ({self.algo.seed}) is not used in a run config: set run.seed, "
                "which seeds the environments and the algorithm together"
            )
        return self

    @model_validator(mode="after")
    def _ensemble_supported(self) -> TradingConfig:
        if self.run.seeds is None:
            return self
        if self.portfolio is not None:
            raise ValueError(
                f"run.seeds ({self.run.seeds}) is for single-instrument runs; a portfolio run "
                "trains one seed (run.seed)"
            )
        if self.env.sizing.mode != "position":
            # An ensemble is stepped with the members' mean position as its action; a member's
            # position under vol_scaled sizing needs the bar's volatility scale, which the
            # ensemble's policy does not see.
            raise ValueError(
                f"run.seeds ({self.run.seeds}) needs env.sizing.mode 'position', not "
                f"{self.env.sizing.mode!r}"
            )
        return self

    @model_validator(mode="after")
    def _batch_within_rollout(self) -> TradingConfig:
        rollout = self.algo.n_steps * self.env.n_envs
        if self.algo.batch_size > rollout:
            raise ValueError(
                f"algo.batch_size ({self.algo.batch_size}) is larger than one rollout, "
                f"algo.n_steps x env.n_envs = {self.algo.n_steps} x {self.env.n_envs} = {rollout}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of the resolved config."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
