"""torch.compile of the update's small-op graph (``PPOConfig.compile``): one compiled wrapper
per function and process, so every model of a process shares its graphs (and recompiles only
for a new shape or configuration, not per model)."""

from __future__ import annotations

import dataclasses
import functools
import shutil
from collections.abc import Callable
from typing import Literal, TypeVar

import torch as th

F = TypeVar("F", bound=Callable[..., object])
T = TypeVar("T")

# Graphs per compiled function: one per (configuration, minibatch shape) seen in the process,
# e.g. the full and the last, shorter minibatch, or microbatches. torch's default (8) would
# silently fall back to eager in a process that trains several configurations (benchmarks,
# tests, PBT workers).
RECOMPILE_LIMIT = 64


@functools.cache
def compiled(fn: F) -> F:
    """
    ``torch.compile(fn)`` (inductor, static shapes), created once per process and function.

    Parameters
    ----------
    fn : callable
        A function of tensors whose graph has no data-dependent shapes.

    Returns
    -------
    callable
        The compiled function; it compiles on its first call with each new input shape.
    """
    th._dynamo.config.recompile_limit = max(th._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    return th.compile(fn, dynamic=False)  # type: ignore[return-value]


def graph_input(value: object) -> object:
    """``value`` in the form one graph serves for every call: a float as a 0-d float64 tensor
    (as a Python float each new value would be a new graph), a tensor contiguous (the plain
    and the segmented LSTM call return different layouts), a plain tuple and a dataclass with
    their items and float fields so converted; anything else as it is."""
    if isinstance(value, float):
        return th.tensor(value, dtype=th.float64)
    if isinstance(value, th.Tensor):
        return value.contiguous()
    if type(value) is tuple:
        return tuple(graph_input(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        floats = {
            field.name: th.tensor(getattr(value, field.name), dtype=th.float64)
            for field in dataclasses.fields(value)
            if isinstance(getattr(value, field.name), float)
        }
        return dataclasses.replace(value, **floats) if floats else value
    return value


def call_compiled(fn: Callable[..., T], *args: object) -> T:
    """``compiled(fn)`` called with each argument as :func:`graph_input` makes it."""
    return compiled(fn)(*(graph_input(arg) for arg in args))


def call_eager(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)``: :func:`call_compiled`'s eager counterpart."""
    return fn(*args)


def compiler_available() -> bool:
    """Whether inductor's CPU backend can build kernels here (it needs a C++ compiler)."""
    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))


def use_compile(
    mode: Literal["off", "auto", "on"], total_timesteps: int, min_timesteps: int, device: th.device
) -> bool:
    """
    Whether a run compiles its update (:func:`compiled`): ``on`` always, ``off`` never,
    ``auto`` when the run is long enough to pay for the compilation (``total_timesteps`` at
    least ``min_timesteps``) and a C++ compiler is present for inductor's CPU backend (on other
    devices, inductor brings its own).

    Parameters
    ----------
    mode : {'off', 'auto', 'on'}
        ``PPOConfig.compile``.
    total_timesteps : int
        Steps this ``learn`` call trains.
    min_timesteps : int
        ``PPOConfig.compile_min_timesteps``.
    device : torch.device
        Where the policy lives.

    Returns
    -------
    bool
    """
    if mode == "off":
        return False
    if mode == "on":
        return True
    return total_timesteps >= min_timesteps and (device.type != "cpu" or compiler_available())
