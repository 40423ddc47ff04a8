"""The HTML report: chart functions with known answers, the page's content, and a browser test.

The fixture run directory is built in code in the layout training and evaluation write
(config.yaml, run.json, tb/, backtest/<split>/, evaluation/), from small synthetic data.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradingbot import report_charts as charts
from tradingbot.config import StatisticsConfig
from tradingbot.evaluate.backtest import backtest_metrics
from tradingbot.evaluate.comparison import compare_policies
from tradingbot.report import build_report, read_bars, read_scalars

N_QUANTILES = 10
SPLITS = {"test": "SPY", "validation": "EUR_USD"}  # an instrument name with an underscore too
CHART_KEYS = ("equity", "drawdown", "position", "rolling_sharpe", "returns", "quantiles")
TB_TAGS = ("train/value_loss", "train/policy_loss", "train/approx_kl", "rollout/ep_rew_mean")


def _bars(instrument: str, policy: str, rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Synthetic bars for one policy: a random-walk close, positions, equity and returns."""
    index = pd.bdate_range("2021-01-04", periods=n, name="timestamp")
    close = 100 * np.exp(np.cumsum(np.random.default_rng(7).normal(0.0003, 0.01, n)))
    asset = np.r_[0.0, np.diff(close) / close[:-1]]
    if policy == "flat":
        position = np.zeros(n)
    elif policy == "buy_and_hold":
        position = np.ones(n)
    else:
        position = np.clip(np.sin(np.arange(n) / 9) + rng.normal(0, 0.2, n), -1, 1)
    trade = np.abs(np.diff(position, prepend=0.0))
    cost = 1e-4 * trade
    ret = position * asset - cost
    equity = 10_000 * np.cumprod(1 + ret)
    frame = pd.DataFrame(
        {
            "instrument": instrument,
            "action": position,
            "position": position,
            "trade": trade,
            "cost": cost,
            "equity": equity,
            "reward": np.log1p(ret),
            "return": ret,
            "close": close,
        },
        index=index,
    )
    if policy == "agent":
        center = rng.normal(0.0, 0.002, n)
        spread = 0.01 + 0.005 * np.sin(np.arange(n) / 15) ** 2
        z = np.sort(rng.normal(size=N_QUANTILES))
        for i in range(N_QUANTILES):
            frame[f"q_{i}"] = center + spread * z[i]
    return frame


def make_run_dir(root: Path, n_bars: int = 150) -> Path:
    """A run directory with backtests on two splits, TB scalars, config, run.json and summary."""
    run = root / "run-20240101-abcdef"
    rng = np.random.default_rng(0)
    for split, instrument in SPLITS.items():
        split_dir = run / "backtest" / split
        split_dir.mkdir(parents=True)
        frames = {p: _bars(instrument, p, rng, n_bars) for p in ("agent", "buy_and_hold", "flat")}
        rows = []
        for policy, frame in frames.items():
            frame.to_csv(split_dir / f"bars_{instrument}_{policy}.csv")
            metrics = backtest_metrics(frame)
            rows.append({"policy": policy, "instrument": instrument, **metrics})
        pd.DataFrame(rows).round(4).to_csv(split_dir / "metrics.csv", index=False)
        stats = StatisticsConfig(bootstrap_reps=200)
        compare_policies(frames, 252, stats, n_trials=3).write(split_dir, instrument)

    from torch.utils.tensorboard import SummaryWriter

    for r, run_name in enumerate(("DistributionalPPO_1", "DistributionalPPO_2")):
        writer = SummaryWriter(str(run / "tb" / run_name))
        for step in range(8):
            for k, tag in enumerate(TB_TAGS):
                writer.add_scalar(tag, (1.0 + r) / (step + 1) + k, global_step=2048 * step)
        writer.close()

    (run / "config.yaml").write_text("seed: 3\nenv:\n  cost_bps: 1.0\nppo:\n  n_steps: 2048\n")
    (run / "run.json").write_text(
        json.dumps(
            {
                "config_hash": "deadbeef1234",
                "seed": 3,
                "versions": {"tradingbot": "0.1.0", "torch": "2.13.0"},
                "command": ["tradingbot", "train", "--data", "synthetic"],
                "created": "2024-01-01T00:00:00+00:00",
            }
        )
    )
    (run / "evaluation").mkdir()
    pd.DataFrame(
        {
            "policy": ["agent", "agent", "buy_and_hold", "buy_and_hold"],
            "metric": ["sharpe", "max_drawdown", "sharpe", "max_drawdown"],
            "mean": [0.7312, -0.1234, 0.5521, -0.2345],
            "ci_low": [0.2001, -0.2002, 0.1003, -0.3004],
            "ci_high": [1.2605, -0.0506, 1.0007, -0.1508],
        }
    ).to_csv(run / "evaluation" / "summary.csv", index=False)
    return run


def chart_ids() -> list[str]:
    """Every chart div id the fixture's report must contain."""
    ids = [f"{split}-{inst}-{key}" for split, inst in SPLITS.items() for key in CHART_KEYS]
    return [*ids, "training-curves"]


@pytest.fixture(scope="module")
def report_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_run_dir(tmp_path_factory.mktemp("report"))
    return build_report(run)


# --- chart functions with known answers ----------------------------------------------------


def test_drawdown_series_by_hand() -> None:
    equity = pd.Series([100.0, 120.0, 90.0, 130.0, 117.0])
    expected = [0.0, 0.0, 90 / 120 - 1, 0.0, 117 / 130 - 1]
    np.testing.assert_allclose(charts.drawdown_series(equity), expected)


def test_quantile_bands_pick_symmetric_pairs_nearest_5_and_25_percent() -> None:
    # N = 10: taus 0.05, 0.15, 0.25, ..., 0.95, so 5-95 is (q_0, q_9) and 25-75 is (q_2, q_7).
    bands = charts.quantile_bands(10)
    assert [(lo, hi) for lo, hi, *_ in bands] == [(0, 9), (2, 7)]
    np.testing.assert_allclose([b[2:] for b in bands], [(0.05, 0.95), (0.25, 0.75)])
    # N = 2: one pair only, not duplicated.
    assert [(lo, hi) for lo, hi, *_ in charts.quantile_bands(2)] == [(0, 1)]


def test_rolling_sharpe_matches_pandas_reference() -> None:
    index = pd.bdate_range("2022-01-03", periods=80)
    returns = pd.Series(np.random.default_rng(1).normal(0.001, 0.01, 80), index=index)
    got = charts.rolling_sharpe(returns, window=20, annualization=252)
    ref = returns.rolling(20).mean() / returns.rolling(20).std(ddof=1) * math.sqrt(252)
    assert got.index.equals(index)
    assert got.iloc[:19].isna().all()
    np.testing.assert_allclose(got.iloc[19:], ref.iloc[19:], rtol=1e-10)


def test_fan_chart_bands_and_median() -> None:
    index = pd.bdate_range("2022-01-03", periods=5)
    agent = pd.DataFrame({f"q_{i}": np.full(5, float(i)) for i in range(N_QUANTILES)}, index=index)
    fig = charts.quantile_fan_figure(agent)
    by_name = {trace.name: trace for trace in fig.data}
    np.testing.assert_allclose(by_name["median"].y, 4.5)  # mean of q_4 and q_5
    np.testing.assert_allclose(by_name["5%-95%"].y, 9.0)  # upper edge of the outer band
    np.testing.assert_allclose(by_name["25%-75%"].y, 7.0)
    assert by_name["5%-95%"].fill == "tonexty"


def test_read_bars_and_scalars(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path, n_bars=30)
    bars = read_bars(run / "backtest" / "validation")
    assert list(bars) == ["EUR_USD"]
    assert list(bars["EUR_USD"]) == ["agent", "buy_and_hold", "flat"]
    assert isinstance(bars["EUR_USD"]["agent"].index, pd.DatetimeIndex)
    scalars = read_scalars(run / "tb")
    assert set(scalars) == set(TB_TAGS)
    loss = scalars["train/value_loss"]
    first = loss[loss["run"] == "DistributionalPPO_1"].sort_values("step")
    np.testing.assert_allclose(first["value"], 1.0 / np.arange(1, 9), rtol=1e-6)
    assert first["step"].tolist() == [2048 * s for s in range(8)]


# --- the page ------------------------------------------------------------------------------


def test_report_is_self_contained_with_every_chart_and_table(report_path: Path) -> None:
    page = report_path.read_text(encoding="utf-8")
    assert report_path.name == "report.html"
    assert page.count("Plotly.newPlot(") == len(chart_ids())
    assert re.search(r"<script[^>]*\ssrc=", page) is None  # nothing fetched, plotly.js inline
    assert '<script src="http' not in page and "<link" not in page
    assert len(page) > 3_000_000 and "plotly.js" in page.lower()
    for div_id in chart_ids():
        assert f'id="{div_id}"' in page, div_id
    run = report_path.parent
    for split in SPLITS:
        metrics = pd.read_csv(run / "backtest" / split / "metrics.csv")
        values = metrics[["sharpe", "max_drawdown", "total_return", "psr"]].to_numpy().ravel()
        assert np.isfinite(values).sum() >= 6
        for value in values[np.isfinite(values)]:
            assert f">{value:.4g}<" in page, value  # compact: 4 significant digits
        assert np.isnan(metrics.loc[metrics["policy"] == "flat", "sharpe"]).all()
        assert "<td >&ndash;</td>" in page or '<td class="">&ndash;</td>' in page  # NaN cell
    for value in ("0.7312", "-0.1234", "1.26"):  # 1.2605 to 4 significant digits
        assert f">{value}<" in page
    assert "max_<wbr>drawdown" in page  # long headers may wrap, so wide tables fit
    for split, instrument in SPLITS.items():
        table = pd.read_csv(run / "backtest" / split / f"statistics_{instrument}.csv")
        tests = json.loads((run / "backtest" / split / f"tests_{instrument}.json").read_text())
        assert f"Agent beside the baselines ({instrument})" in page
        hold = table.set_index("policy").loc["buy_and_hold"]
        interval = f"{hold.sharpe:.2f} [{hold.sharpe_low:.2f}, {hold.sharpe_high:.2f}]"
        difference = f"{hold.agent_minus:.2f} [{hold.agent_minus_low:.2f}, "
        assert interval in page and difference in page
        assert f"<b>{tests['spa']['pvalue']:.3f}</b>" in page
        assert f"<b>{tests['deflated_sharpe']['dsr']:.3f}</b> (3 configurations" in page
    assert "deadbeef1234" in page and "versions.torch" in page
    assert "cost_bps: 1.0" in page
    assert "Summary over folds and seeds" in page  # summary.csv present
    assert "Walk-forward folds (" not in page and "By volatility regime" not in page  # absent


def test_missing_optional_pieces_become_notes(tmp_path: Path) -> None:
    run = tmp_path / "bare"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 1\n")
    page = build_report(run).read_text(encoding="utf-8")
    for note in (
        "No run.json.",
        "No backtest/ results.",
        "No TensorBoard scalars",
        "No evaluation/",
    ):
        assert note in page
    assert "Plotly.newPlot(" not in page


def test_agent_without_quantiles_skips_the_fan_chart(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path, n_bars=30)
    path = run / "backtest" / "test" / "bars_SPY_agent.csv"
    frame = pd.read_csv(path)
    frame.drop(columns=[c for c in frame.columns if c.startswith("q_")]).to_csv(path, index=False)
    page = build_report(run).read_text(encoding="utf-8")
    assert 'id="test-SPY-quantiles"' not in page
    assert 'id="validation-EUR_USD-quantiles"' in page
    assert "fan chart skipped" in page


def test_build_report_rejects_a_missing_run_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        build_report(tmp_path / "nope")


# --- the browser ---------------------------------------------------------------------------


def find_chromium() -> str | None:
    """The Chromium binary, or None where none is installed."""
    for candidate in (shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate:
            return candidate
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def run_chromium(binary: str, url: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with every network path closed; the page gets 15 s of virtual time."""
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=127.0.0.1:9",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=15000",
        *args,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def rendered_problems(dom: str) -> list[str]:
    """What the report's own check recorded in the rendered DOM: errors and unrendered charts."""
    box = re.search(r'<div id="report-errors"([^>]*)>(.*?)</div>', dom, re.S)
    assert box is not None, "the rendered DOM has no #report-errors box"
    count = re.search(r'data-count="(\d+)"', box.group(1))
    assert count is not None, "the page's error capture did not run"
    return re.findall(r"<li>(.*?)</li>", box.group(2)) if int(count.group(1)) else []


def chart_divs(dom: str) -> dict[str, str]:
    """Chart div id -> its inner HTML up to the next chart, from the rendered DOM."""
    starts = [
        (m.start(), m.group(1))
        for m in re.finditer(r'<div id="([^"]+)" class="plotly-graph-div', dom)
    ]
    ends = [s for s, _ in starts[1:]] + [len(dom)]
    return {div_id: dom[s:e] for (s, div_id), e in zip(starts, ends, strict=True)}


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        pytest.skip(
            "chromium not installed: the browser test needs headless Chromium "
            "(apt-get install -y chromium); .ci/run installs it"
        )
    return binary


def test_report_renders_offline_in_chromium(
    chromium: str, report_path: Path, tmp_path: Path
) -> None:
    url = report_path.resolve().as_uri()
    result = run_chromium(chromium, url, tmp_path / "profile", "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert rendered_problems(dom) == []
    uncaught = [
        line for line in result.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line
    ]
    assert uncaught == []
    assert f'data-charts="{len(chart_ids())}"' in dom
    divs = chart_divs(dom)
    assert sorted(divs) == sorted(chart_ids())
    for div_id, inner in divs.items():
        assert 'class="main-svg"' in inner, f"{div_id} has no plotly SVG"
        size = re.search(r'data-rendered-size="(\d+)x(\d+)"', dom.split(f'id="{div_id}"')[1])
        assert size is not None and int(size.group(1)) > 0 and int(size.group(2)) > 0, div_id
        assert re.search(r'class="(scatterlayer|barlayer)', inner), f"{div_id} drew no traces"

    shot = tmp_path / "report.png"
    result = run_chromium(
        chromium, url, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1400,3000"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 50_000
    print(f"report screenshot: {shot}")


def test_browser_check_catches_errors_and_network_loads(
    chromium: str, report_path: Path, tmp_path: Path
) -> None:
    """The check above can fail: a remote script is blocked and a thrown error is reported."""
    page = report_path.read_text(encoding="utf-8")
    broken = page.replace(
        "</body>",
        '<script src="https://cdn.plot.ly/plotly-2.0.0.min.js"></script>'
        "<script>undefinedFunction();</script></body>",
    )
    bad = tmp_path / "broken.html"
    bad.write_text(broken, encoding="utf-8")
    result = run_chromium(chromium, bad.resolve().as_uri(), tmp_path / "profile", "--dump-dom")
    problems = rendered_problems(result.stdout)
    assert any("failed to load https://cdn.plot.ly" in p for p in problems), problems
    assert any("undefinedFunction" in p for p in problems), problems


def test_position_axis_drops_the_empty_short_half() -> None:
    index = pd.date_range("2020-01-01", periods=4, freq="D")
    long_only = pd.DataFrame({"position": [0.0, 0.5, 1.0, 0.2]}, index=index)
    both = pd.DataFrame({"position": [0.0, -0.5, 1.0, 0.2]}, index=index)
    assert tuple(charts.position_figure(long_only).layout.yaxis.range) == (-0.05, 1.05)
    assert tuple(charts.position_figure(both).layout.yaxis.range) == (-1.05, 1.05)
