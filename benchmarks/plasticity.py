"""Plasticity benchmark: label-permuted continual classification, SGD/Adam vs UPGD/AdaptiveUPGD.

A fixed synthetic data set (Gaussian clusters, built in code) is learned as a sequence of tasks;
each new task draws a new random permutation of the class labels, so what was learned before is
wrong and must be relearned. A learner that keeps its plasticity reaches the same accuracy on the
last tasks as on the first ones; one that loses it (growing weights, saturated or dead units)
learns the late tasks worse. The metric is the paper's: the average online accuracy (on each
minibatch before the update) over a task.

Run: ``python benchmarks/plasticity.py --seed 0 --tasks 200`` (CPU, two worker processes of one
thread each, about 2 minutes on 2 cores).

Settings (from a small manual search at seed 0, 100 steps of 16 samples per task): SGD lr 0.2;
Adam lr 1e-2 (the larger learning rate makes its loss of plasticity show within 200 tasks);
AdamW lr 1e-2, weight decay 0.01 (the same decoupled decay as the UPGD rows, to separate the
effect of weight decay from that of utility gating and noise); UPGD lr 0.2, sigma 0.1, weight
decay 0.01; AdaptiveUPGD lr 1e-2, sigma 0.1, weight decay 0.01; both UPGDs with beta_utility
0.999, protecting, global scope. Without weight decay, UPGD with sigma 0.1 collapsed after ~60
tasks in that search (the noise random-walks the weights), and sigma 0.01 kept 0.92.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import get_context

import torch
from torch import nn

from tradingbot.optim import UPGD, AdaptiveUPGD

OptimizerFactory = Callable[[Iterator[nn.Parameter]], torch.optim.Optimizer]


@dataclass(frozen=True)
class TaskConfig:
    """Shape of the continual-learning problem.

    :param n_classes: number of classes (clusters).
    :param dim: input dimension.
    :param per_class: samples per class in the fixed data set.
    :param spread: standard deviation of each cluster around its center (centers ~ N(0, 1)).
    :param steps_per_task: online updates per task.
    :param batch_size: samples per update.
    :param hidden: width of the two hidden layers.
    """

    n_classes: int = 10
    dim: int = 16
    per_class: int = 100
    spread: float = 0.6
    steps_per_task: int = 100
    batch_size: int = 16
    hidden: int = 128


def make_dataset(config: TaskConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed Gaussian-cluster data set: inputs ``(n, dim)`` and cluster ids ``(n,)``."""
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(config.n_classes, config.dim, generator=gen)
    labels = torch.arange(config.n_classes).repeat_interleave(config.per_class)
    inputs = centers[labels] + config.spread * torch.randn(len(labels), config.dim, generator=gen)
    return inputs, labels


def make_model(config: TaskConfig, seed: int) -> nn.Module:
    """Two-hidden-layer ReLU MLP, initialized from ``seed`` (the same for every optimizer)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(config.dim, config.hidden),
        nn.ReLU(),
        nn.Linear(config.hidden, config.hidden),
        nn.ReLU(),
        nn.Linear(config.hidden, config.n_classes),
    )


def run_sequence(
    factory: OptimizerFactory, config: TaskConfig, tasks: int, seed: int
) -> list[float]:
    """Train one model through ``tasks`` label permutations; return each task's online accuracy.

    The data order and the permutations depend only on ``seed``, so every optimizer sees the same
    stream.
    """
    inputs, clusters = make_dataset(config, seed)
    model = make_model(config, seed)
    optimizer = factory(model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    stream = torch.Generator().manual_seed(seed + 1)
    accuracies = []
    for _ in range(tasks):
        permutation = torch.randperm(config.n_classes, generator=stream)
        targets = permutation[clusters]
        correct = 0
        for _ in range(config.steps_per_task):
            idx = torch.randint(len(inputs), (config.batch_size,), generator=stream)
            logits = model(inputs[idx])
            loss = loss_fn(logits, targets[idx])
            correct += int((logits.argmax(dim=1) == targets[idx]).sum())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        accuracies.append(correct / (config.steps_per_task * config.batch_size))
    return accuracies


def optimizers(seed: int) -> dict[str, OptimizerFactory]:
    """The compared optimizers and their settings (see the module docstring)."""

    def noise_gen() -> torch.Generator:
        return torch.Generator().manual_seed(seed + 2)

    return {
        "SGD lr=0.2": lambda p: torch.optim.SGD(p, lr=0.2),
        "Adam lr=1e-2": lambda p: torch.optim.Adam(p, lr=1e-2),
        "AdamW lr=1e-2 wd=0.01": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.01),
        "UPGD lr=0.2 sigma=0.1 wd=0.01": lambda p: UPGD(
            p, lr=0.2, sigma=0.1, weight_decay=0.01, beta_utility=0.999, generator=noise_gen()
        ),
        "AdaptiveUPGD lr=1e-2 sigma=0.1 wd=0.01": lambda p: AdaptiveUPGD(
            p, lr=1e-2, sigma=0.1, weight_decay=0.01, beta_utility=0.999, generator=noise_gen()
        ),
    }


def summarize(accuracies: list[float], window: int) -> tuple[float, float]:
    """Mean online accuracy over the first and over the last ``window`` tasks."""
    window = min(window, len(accuracies))
    first = sum(accuracies[:window]) / window
    last = sum(accuracies[-window:]) / window
    return first, last


def _run_named(job: tuple[str, int, int]) -> tuple[str, list[float], float]:
    """Worker: one optimizer through the whole sequence (one thread per process)."""
    name, tasks, seed = job
    torch.set_num_threads(1)
    start = time.perf_counter()
    accuracies = run_sequence(optimizers(seed)[name], TaskConfig(), tasks, seed)
    return name, accuracies, time.perf_counter() - start


def main(seed: int, tasks: int, window: int, workers: int) -> None:
    """Run every optimizer on the same task sequence and print the table."""
    config = TaskConfig()
    print(f"label-permuted Gaussian clusters: {config}, tasks={tasks}, seed={seed}")
    header = (
        f"{'optimizer':<40} {'first ' + str(window):>9} {'last ' + str(window):>9} "
        f"{'last/first':>10} {'seconds':>8}"
    )
    print(header)
    print("-" * len(header))
    jobs = [(name, tasks, seed) for name in optimizers(seed)]
    # Each run is independent and single-threaded, so processes use the cores better than
    # intra-op threads on a network this small.
    with get_context("spawn").Pool(workers) as pool:
        for name, accuracies, elapsed in pool.imap(_run_named, jobs):
            first, last = summarize(accuracies, window)
            print(
                f"{name:<40} {first:>9.3f} {last:>9.3f} {last / first:>10.3f} {elapsed:>8.1f}",
                flush=True,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument(
        "--window",
        type=int,
        default=20,
        help="number of first and last tasks averaged in the table",
    )
    parser.add_argument("--workers", type=int, default=2, help="parallel processes")
    args = parser.parse_args()
    main(args.seed, args.tasks, args.window, args.workers)
