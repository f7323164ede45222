"""The trainer: config, data order, objective step, checkpoints, loop."""
