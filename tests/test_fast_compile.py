"""The compiled minibatch loss (``PPOConfig.compile``) against the eager one: the same loss,
metrics and gradients within float32 rounding, on a small policy, for the default and the
all-options configs; and when ``compile = 'auto'`` compiles."""

from __future__ import annotations

import dataclasses

import pytest
import torch as th

from conftest import small_model
from tradingbot.algo.fast.compiled import compiler_available, use_compile
from tradingbot.algo.presets import ALL_RISK_AND_STABILITY
from tradingbot.algo.update import UpdateContext, accumulate_gradients

needs_compiler = pytest.mark.skipif(not compiler_available(), reason="no C++ compiler")


def _context(options: dict, **scalars: float) -> UpdateContext:
    """An update context with every scalar the options read (values of no special meaning)."""
    return UpdateContext(
        ret_mean=scalars.get("ret_mean", 0.3),
        ret_std=scalars.get("ret_std", 2.0),
        ent_coef=scalars.get("ent_coef", 0.01),
        clip_range=scalars.get("clip_range", 0.2),
        sigma_bar=scalars.get("sigma_bar", 0.5) if "critic_adjust" in options else None,
        kl_beta=scalars.get("kl_beta", 0.7) if options.get("kl_penalty") else None,
        awr_coef=scalars.get("awr_coef", 0.1) if "awr" in options else None,
        vf_coef=scalars.get("vf_coef", 0.5),
    )


@needs_compiler
@pytest.mark.parametrize(
    "options",
    [{}, ALL_RISK_AND_STABILITY, {"activation": "relu", "ortho_init": False}],
    ids=["default", "all_options", "relu_default_init"],
)
def test_compiled_loss_and_gradients_match_eager(options: dict) -> None:
    model = small_model(**options)
    model.learn(64)  # parameters moved, buffer full (episode starts inside chunks included)
    batch = model.rollout_buffer.to_chunks(16).select(th.arange(4))

    def run(compiled: bool, ctx: UpdateContext) -> tuple[th.Tensor, dict[str, float]]:
        learner = dataclasses.replace(model.learner, compile_loss=compiled)
        metrics = accumulate_gradients(learner, batch, ctx)
        return model.gradients.flat.clone(), {k: float(v) for k, v in metrics.items()}

    # Two contexts: a scalar baked into the graph as a constant would match only the first.
    first = _context(options)
    second = _context(options, clip_range=0.05, ent_coef=0.2, sigma_bar=2.0, kl_beta=3.0,
                      awr_coef=0.9, ret_mean=-1.0, ret_std=0.5, vf_coef=2.0)  # fmt: skip
    results = {}
    for name, ctx in (("first", first), ("second", second)):
        eager_grad, eager_metrics = run(False, ctx)
        compiled_grad, compiled_metrics = run(True, ctx)
        assert eager_grad.abs().max() > 1e-3
        # float32 rounding in another order of the fused kernels.
        assert th.allclose(compiled_grad, eager_grad, rtol=1e-4, atol=1e-6), (
            (compiled_grad - eager_grad).abs().max()
        )
        assert compiled_metrics.keys() == eager_metrics.keys()
        for key, value in eager_metrics.items():
            assert compiled_metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
        results[name] = eager_grad
    # The two contexts give different gradients, so the second check is not the first again.
    assert (results["first"] - results["second"]).abs().max() > 1e-3


def test_auto_compiles_only_long_runs() -> None:
    cpu = th.device("cpu")
    assert not use_compile("off", 10**9, 1000, cpu)
    assert use_compile("on", 1, 1000, cpu)
    assert not use_compile("auto", 999, 1000, cpu)
    assert use_compile("auto", 1000, 1000, cpu) == compiler_available()
    # Through learn: a short run under the default stays eager.
    model = small_model()
    assert model.config.compile == "auto"
    model.learn(64)
    assert not model.learner.compile_loss
    # (learn(0) decides without training, so nothing compiles here.) Under auto the decision
    # counts the steps already trained and, once on, stays on; off turns it off.
    config = model.config.model_copy(update={"compile_min_timesteps": 64})
    model.set_hyperparameters(config)
    model.learn(0, reset_num_timesteps=False)  # 64 trained + 0 = 64
    assert model.learner.compile_loss == compiler_available()
    model.learn(0)  # a run of 0 steps, from 0: on, because it was on
    assert model.learner.compile_loss == compiler_available()
    model.set_hyperparameters(config.model_copy(update={"compile": "off"}))
    model.learn(0, reset_num_timesteps=False)
    assert not model.learner.compile_loss
