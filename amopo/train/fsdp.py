"""FSDP2 sharding from an accelerate config file, read inside ``amopo train`` (under torchrun), so that
every launch — one machine or a multi-node TrainJob — is the same ``torchrun -m amopo train`` and
the sharding travels as one option (``--fsdp-config configs/accelerate/fsdp.yaml``).

The file's ``fsdp_config`` section takes exactly the settings the project's tests run:

    fsdp_version: 2                          torch's fully_shard (DTensor parameters)
    fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP   one shard group per decoder block (the model's
                                             ``_no_split_modules``), plus the root
    fsdp_reshard_after_forward: true         free each block's gathered weights after its forward
    fsdp_state_dict_type: SHARDED_STATE_DICT checkpoints hold each rank's shards (torch.distributed.checkpoint);
                                             the final model/ is gathered into one full folder

Anything else is refused with the reason. Mixed precision stays the train config's ``mixed_precision``.
"""

from __future__ import annotations

from pathlib import Path

from amopo import config as config_lib
from amopo.errors import ConfigError

SUPPORTED = {
    "fsdp_version": (2,),
    "fsdp_auto_wrap_policy": ("TRANSFORMER_BASED_WRAP",),
    "fsdp_reshard_after_forward": (True,),
    "fsdp_state_dict_type": ("SHARDED_STATE_DICT",),
}


def read_fsdp_config(path: str | Path) -> dict:
    """The validated ``fsdp_config`` section of the accelerate config file ``path`` (a relative path
    not found here is looked up in the project folder: :func:`amopo.train.shipped.shipped_or_local`)."""
    from amopo.train.shipped import shipped_or_local

    path = shipped_or_local(path)
    data = config_lib.load_yaml(path)
    where = f"{path}"
    extra = sorted(set(data) - {"distributed_type", "fsdp_config"})
    if extra:
        raise ConfigError(f"{where}: {', '.join(extra)} not read by `amopo train` (torchrun sets processes and "
                          "nodes; mixed precision is the train config's mixed_precision); remove them")
    if data.get("distributed_type") != "FSDP":
        raise ConfigError(f"{where}: distributed_type must be FSDP, got {data.get('distributed_type')!r}")
    section = data.get("fsdp_config")
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: needs an fsdp_config mapping")
    unknown = sorted(set(section) - set(SUPPORTED))
    if unknown:
        raise ConfigError(f"{where}: fsdp_config.{', '.join(unknown)} is not supported by `amopo train`; "
                          f"supported: {', '.join(SUPPORTED)}")
    for key, allowed in SUPPORTED.items():
        if key not in section:
            raise ConfigError(f"{where}: fsdp_config.{key} is missing; set it to {allowed[0]!r}")
        if section[key] not in allowed:
            raise ConfigError(f"{where}: fsdp_config.{key} must be {' or '.join(map(repr, allowed))} (the "
                              f"setting the project's tests run), got {section[key]!r}")
    return section


def fsdp_plugin(path: str | Path):
    """accelerate's FullyShardedDataParallelPlugin for the file ``path``."""
    from accelerate import FullyShardedDataParallelPlugin

    section = read_fsdp_config(path)
    return FullyShardedDataParallelPlugin(
        fsdp_version=section["fsdp_version"], auto_wrap_policy="transformer_based_wrap",
        reshard_after_forward=section["fsdp_reshard_after_forward"],
        state_dict_type=section["fsdp_state_dict_type"], cpu_ram_efficient_loading=False)


def shard_on_cpu_too(accelerator, plugin) -> None:
    """Turn FSDP on where accelerate 1.15 leaves it off: it enables its FSDP plugin only for GPU-type
    process groups, and on CPU (gloo) silently runs plain multi-process training instead. torch's
    FSDP2 itself runs on gloo, so the distributed type is set here as accelerate sets it on GPUs,
    in both of its shared states, before anything is prepared."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.MULTI_CPU:
        return
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    PartialState().distributed_type = DistributedType.FSDP
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin


def refuse_unsupported(cfg) -> None:
    """Options never run with FSDP by the project's tests are refused rather than tried."""
    if not cfg.fsdp_config:
        return
    for name, why in (("lora", "LoRA adapters"), ("compile", "compiled blocks"),
                      ("gradient_checkpointing", "gradient checkpointing")):
        if getattr(cfg, name):
            raise ConfigError(f"train config: {name} with fsdp_config is not supported ({why} under FSDP2 have "
                              "not been run by the project's tests); drop one of them")
    if cfg.reference == "copy":
        raise ConfigError("train config: reference 'copy' with fsdp_config would hold a whole unsharded copy of "
                          "the model per process; use reference 'precomputed' (the default when sharded)")
