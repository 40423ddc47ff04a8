from typer.testing import CliRunner

from tradingbot.cli import app

runner = CliRunner()


def test_data_list_shows_every_dataset():
    result = runner.invoke(app, ["data", "list"], terminal_width=200)
    assert result.exit_code == 0, result.output
    bundled = (("sp500", "5031"), ("nasdaq", "5031"), ("vix", "1259"), ("googl", "2335"))
    for name, rows in (*bundled, ("eurusd", "6225")):
        line = next(ln for ln in result.output.splitlines() if f" {name} " in ln)
        assert rows in line
    assert "1999-01-04" in result.output and "2018-12-31" in result.output


def test_data_show_bundled():
    result = runner.invoke(app, ["data", "show", "sp500"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "SPX" in result.output and "valid" in result.output
    assert "ret_20" in result.output and "train" in result.output


def test_data_show_invalid_file(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("date,open,high,low,close\n2020-01-01,1,2,0.5,1\n2020-01-02,1,2,3,1\n")
    result = runner.invoke(app, ["data", "show", str(path)], terminal_width=300)
    assert result.exit_code == 1
    # The bad bar is on line 3 of the file (the header is line 1).
    assert "[bad]: line 3 (2020-01-02" in result.output and "high 2.0 < low 3.0" in result.output


def test_train_writes_run_directory(tmp_path):
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            "synthetic",
            "--no-progress",
            "--set",
            "run.total_timesteps=512",
            "--set",
            f"run.out_dir={tmp_path}",
            "--set",
            "run.name=r",
            "--set",
            "env.n_envs=2",
            "--set",
            "algo.n_steps=128",
            "--set",
            "algo.batch_size=128",
        ],
        terminal_width=300,
    )
    assert result.exit_code == 0, result.output
    run = tmp_path / "r"
    assert f"run directory: {run}" in result.output
    for name in ("config.yaml", "run.json", "model.safetensors", "normalization.safetensors", "tb"):
        assert (run / name).exists(), name
    assert "source: synthetic" in (run / "config.yaml").read_text()


def test_train_rejects_bad_override(tmp_path):
    result = runner.invoke(app, ["train", "--set", "algo.n_quantile=8"], terminal_width=300)
    assert result.exit_code == 1
    assert "algo.n_quantile: unknown key" in result.output and "n_quantiles" in result.output
