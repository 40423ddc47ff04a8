#!/usr/bin/env python
"""The update's two LSTMs in float32 and under bfloat16 autocast (issue 26).

Two 64-unit ``nn.LSTM`` s (actor and critic), forward and backward over one minibatch of the
update (16 chunks of 32 steps), one torch thread. The two precisions alternate call by call so
that both see the same machine; the median thread CPU time of each is printed, with the largest
difference of the hidden outputs. CPU autocast runs oneDNN's ``mkldnn_rnn_layer`` in bfloat16
(AVX512-BF16 where the CPU has it).

    .venv/bin/python benchmarks/lstm_bfloat16.py
"""

from __future__ import annotations

import statistics
import time

import torch as th

HIDDEN, CHUNKS, SEQ_LEN, CALLS = 64, 16, 32, 300


def forward_backward(lstms: list[th.nn.LSTM], x: th.Tensor, bf16: bool) -> th.Tensor:
    """Both LSTMs forward and a backward of a scalar of their outputs; the actor's output."""
    with th.autocast("cpu", dtype=th.bfloat16, enabled=bf16):
        outputs = [lstm(x)[0] for lstm in lstms]
    sum(y.float().square().sum() for y in outputs).backward()
    return outputs[0].detach().float()


def main() -> None:
    th.set_num_threads(1)
    th.manual_seed(0)
    for obs_dim in (3, 7):  # Pendulum-v1, the trading env (benchmarks/throughput.py)
        lstms = [th.nn.LSTM(obs_dim, HIDDEN, batch_first=True) for _ in range(2)]
        x = th.randn(CHUNKS, SEQ_LEN, obs_dim)
        times: dict[bool, list[float]] = {False: [], True: []}
        for call in range(CALLS + 30):
            for bf16 in (False, True):
                start = time.thread_time()
                forward_backward(lstms, x, bf16)
                if call >= 30:  # warm-up
                    times[bf16].append(time.thread_time() - start)
        exact, rounded = forward_backward(lstms, x, False), forward_backward(lstms, x, True)
        fp32, bf16 = statistics.median(times[False]), statistics.median(times[True])
        print(
            f"obs_dim {obs_dim}: float32 {fp32 * 1e3:.3f} ms, bfloat16 {bf16 * 1e3:.3f} ms, "
            f"ratio {bf16 / fp32:.2f}, largest output difference "
            f"{(exact - rounded).abs().max():.1e}"
        )


if __name__ == "__main__":
    main()
