import numpy as np

from tradingbot.config import SyntheticConfig
from tradingbot.data.sources import load_market
from tradingbot.data.synthetic import (
    REGIME_VOL,
    SIGNAL_PERSISTENCE,
    generate_market,
    oracle_positions,
)


def intrabar(bars):
    return np.log(bars["close"] / bars["open"]).to_numpy()


def test_seeded_and_reproducible():
    a = generate_market(2, 500, seed=3, predictability=0.2, start="2001-01-01")
    b = generate_market(2, 500, seed=3, predictability=0.2, start="2001-01-01")
    c = generate_market(2, 500, seed=4, predictability=0.2, start="2001-01-01")
    for k in a:
        assert a[k].bars.equals(b[k].bars)
    assert not a["SYN0"].bars.equals(c["SYN0"].bars)


def test_regimes_and_volatility_clustering():
    path = generate_market(1, 20_000, seed=0, predictability=0.0, start="2000-01-03")["SYN0"]
    r = intrabar(path.bars)
    assert set(np.unique(path.regimes)) == {0, 1, 2, 3}  # bull, bear, choppy, crash all occur
    vol = np.array([r[path.regimes == k].std() for k in range(4)])
    # Each regime's realized volatility is near its level (GARCH has unit long-run variance).
    np.testing.assert_allclose(vol, REGIME_VOL, rtol=0.25)
    bull = r[path.regimes == 0]
    sq = bull**2
    # Volatility clustering: squared returns are autocorrelated, returns themselves much less.
    assert np.corrcoef(sq[:-1], sq[1:])[0, 1] > 0.05
    assert abs(np.corrcoef(bull[:-1], bull[1:])[0, 1]) < 0.05


def test_signal_is_ar1_with_unit_variance():
    bars = generate_market(1, 50_000, seed=1, predictability=0.3, start="2000-01-03")["SYN0"].bars
    s = bars["signal"].to_numpy()
    assert abs(s.std() - 1.0) < 0.05
    assert abs(np.corrcoef(s[:-1], s[1:])[0, 1] - SIGNAL_PERSISTENCE) < 0.01


def test_known_edge_of_the_oracle():
    """With predictability p the next intrabar return has mean p * s_t * sigma + drift, so the
    oracle sign(s_t) earns E[p |s| sigma] = p * sqrt(2/pi) * E[sigma] per bar before costs,
    while with p = 0 it earns nothing beyond noise."""
    p = 0.3
    path = generate_market(1, 100_000, seed=2, predictability=p, start="2000-01-03")["SYN0"]
    bars = path.bars
    s, r = bars["signal"].to_numpy(), intrabar(bars)
    earned = oracle_positions(s[:-1]) * r[1:]
    expected = p * np.sqrt(2 / np.pi) * path.sigma[1:].mean()  # s ~ N(0, 1): E|s| = sqrt(2/pi)
    stderr = earned.std() / np.sqrt(len(earned))
    assert abs(earned.mean() - expected) < 4 * stderr
    assert expected > 20 * stderr  # the edge is real, not noise
    flat = generate_market(1, 100_000, seed=2, predictability=0.0, start="2000-01-03")["SYN0"]
    assert "signal" not in flat.bars


def test_bundled_synthetic_uses_config():
    data = load_market("synthetic", SyntheticConfig(n_instruments=3, n_bars=300, seed=5))
    assert list(data.bars) == ["SYN0", "SYN1", "SYN2"]
    assert all(len(b) == 300 for b in data.bars.values())
