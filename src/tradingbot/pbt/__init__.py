"""Population-based training of DistributionalPPO on Ray Tune (``tradingbot pbt``).

- :mod:`tradingbot.pbt.member`: one member without Ray (hyperparameters applied to a live
  model, member checkpoints, the exploit, the validation score);
- :mod:`tradingbot.pbt.trainable`: the Tune function trainable;
- :mod:`tradingbot.pbt.runner`: Ray and the Tuner with ``PopulationBasedTraining``;
- :mod:`tradingbot.pbt.export`: members table, best member as a run directory, plots.
"""

from tradingbot.pbt.member import (
    MemberState,
    apply_hyperparameters,
    exploit,
    reset_recurrent_state,
    restore_member,
    save_member,
    score_member,
)
from tradingbot.pbt.runner import PBTResult, connect_ray, run_pbt
from tradingbot.pbt.trainable import FaultInjection

__all__ = [
    "FaultInjection",
    "MemberState",
    "PBTResult",
    "apply_hyperparameters",
    "connect_ray",
    "exploit",
    "reset_recurrent_state",
    "restore_member",
    "run_pbt",
    "save_member",
    "score_member",
]
