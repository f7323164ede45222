"""Run `amopo train` on this machine: in this process, or as N data-parallel CPU/GPU processes.

    run_local(cfg, num_processes=1)  → train(cfg) here
    run_local(cfg, num_processes=N)  → torchrun --standalone --nproc-per-node N -m amopo train --config …

Both return the training summary (the dict ``amopo train`` writes to OUTPUT/metrics.json). With N
processes the global batch is N × batch_size × gradient_accumulation_steps pairs (see amopo.train.loop).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from amopo import config as config_lib
from amopo.errors import AmopoError, ConfigError
from amopo.train.config import TrainConfig


class LaunchError(AmopoError):
    """A training process group ended with a non-zero status."""


def run_local(cfg: TrainConfig, num_processes: int = 1) -> dict:
    cfg.validate()
    if num_processes < 1:
        raise ConfigError(f"num_processes must be ≥ 1, got {num_processes}")
    if num_processes == 1:
        from amopo.train.loop import train

        return train(cfg)
    return _torchrun(cfg, num_processes)


def _torchrun(cfg: TrainConfig, num_processes: int) -> dict:
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="train-", dir=out.parent, delete=False) as fh:
        fh.write(config_lib.dump_yaml(cfg))
        config_file = fh.name
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={num_processes}",
           "-m", "amopo", "train", "--config", config_file]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    try:
        code = subprocess.run(cmd, env=env).returncode
    finally:
        Path(config_file).unlink(missing_ok=True)
    if code != 0:
        raise LaunchError(f"training with {num_processes} processes failed (exit status {code}); "
                          f"the ranks' errors are printed above")
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))
