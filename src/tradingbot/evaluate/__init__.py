"""Honest evaluation: backtests through the training env, metrics, baselines."""
