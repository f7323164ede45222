"""Build the project's image from its Dockerfile with the engine this machine has.

    bash scripts/build_image.sh [--tag amopo:0.1.0] [--engine auto|docker|podman|buildah]
                                [--torch cpu|cu126|cu128|cu130] [--base-image IMAGE]
                                [--no-host-pip-config] [--record build/image.json]

- Engine: the first of docker, podman, buildah that works here (docker and podman need their
  service; buildah runs daemonless, with chroot isolation and the host network). buildah and
  podman keep their own storage driver (overlay on Debian, or STORAGE_DRIVER); ``vfs`` works where
  overlay mounts are not allowed, at the cost of a full copy of the filesystem per layer.
- Base: ``--base-image`` (default python:3.11-slim). Where that image is neither present nor
  pullable, and Debian's mmdebstrap is installed, an equivalent base is bootstrapped once
  (Debian bookworm, whose python3 is 3.11, with venv, pip and CA certificates) and tagged
  ``localhost/amopo-base:bookworm-py311``.
- torch: PyTorch's index for ``--torch`` and the requirement ``torch==VERSION+VARIANT``, VERSION
  from pyproject.toml.
- pip: this machine's pip configuration (``pip config list``: indexes, find-links, constraints,
  certificates) is given to the build, with read-only mounts of the local paths it names, unless
  ``--no-host-pip-config``. docker's builder cannot mount them and builds with pip's defaults.
- The result's image id, digest and size are printed and written to ``--record``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from amopo.image.pip_config import config_file_text, index_url, local_paths, read_pip_config

ROOT = Path(__file__).resolve().parents[2]
ENGINES = ("docker", "podman", "buildah")
TORCH_VARIANTS = ("cpu", "cu126", "cu128", "cu130")
TORCH_INDEX = "https://download.pytorch.org/whl/{variant}"
DEFAULT_BASE = "python:3.11-slim"
BOOTSTRAP_BASE = "localhost/amopo-base:bookworm-py311"
BOOTSTRAP_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
PIP_CONFIG_IN_BUILD = "/run/amopo-build-pip/pip.conf"


class ImageBuildError(RuntimeError):
    """A build that cannot start or did not finish; the message says which step and why."""


@dataclass
class BuildPlan:
    engine: str
    tag: str
    base_image: str
    build_args: dict[str, str]
    mounts: list[tuple[str, str]] = field(default_factory=list)   # (host path, path in build), read-only
    context: Path = ROOT


def project_version(root: Path = ROOT) -> str:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]


def torch_version(root: Path = ROOT) -> str:
    """The version pyproject.toml pins torch to (``torch==X``)."""
    for req in tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]:
        name, sep, version = req.partition("==")
        if sep and name.strip() == "torch":
            return version.strip()
    raise ImageBuildError("pyproject.toml pins no torch==VERSION")


def engine_works(engine: str) -> bool:
    """docker and podman: their service answers; buildah: the binary runs."""
    if shutil.which(engine) is None:
        return False
    probe = ["--version"] if engine == "buildah" else ["info"]
    try:
        return subprocess.run([engine, *probe], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pick_engine(requested: str = "auto") -> str:
    if requested != "auto":
        if requested not in ENGINES:
            raise ImageBuildError(f"--engine {requested!r}: expected auto or one of {', '.join(ENGINES)}")
        if not engine_works(requested):
            raise ImageBuildError(f"--engine {requested}: it does not run here (for docker and podman, is the "
                                  f"service running? `{requested} info` must succeed)")
        return requested
    for engine in ENGINES:
        if engine_works(engine):
            return engine
    raise ImageBuildError("no image engine works here: install docker, podman or buildah "
                          "(Debian: apt-get install buildah mmdebstrap)")


def image_present(engine: str, image: str) -> bool:
    cmd = (["image", "inspect", image] if engine != "buildah" else ["inspect", "--type", "image", image])
    return subprocess.run([engine, *cmd], capture_output=True).returncode == 0


def pull(engine: str, image: str, timeout_s: float = 120.0) -> bool:
    try:
        return subprocess.run([engine, "pull", image], capture_output=True,
                              timeout=timeout_s).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def bootstrap_base(engine: str, tag: str = BOOTSTRAP_BASE) -> str:
    """A Debian bookworm base with Python 3.11 (venv, pip, CA certificates), made with mmdebstrap
    from Debian's archive and imported as ``tag``. Kept: later builds reuse it."""
    if image_present(engine, tag):
        return tag
    if shutil.which("mmdebstrap") is None:
        raise ImageBuildError("the base image cannot be pulled and mmdebstrap is not installed to bootstrap one "
                              "(Debian: apt-get install mmdebstrap), or pass --base-image with an image you have")
    with tempfile.TemporaryDirectory(prefix="amopo-base-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        print(f"bootstrapping {tag} with mmdebstrap (Debian bookworm) ...", flush=True)
        step = subprocess.run(["mmdebstrap", "--variant=minbase", f"--include={','.join(BOOTSTRAP_PACKAGES)}",
                               "bookworm", str(rootfs)], capture_output=True, text=True)
        if step.returncode != 0:
            raise ImageBuildError(f"mmdebstrap failed: {step.stderr.strip()[-800:]}")
        eng = [engine]
        if engine == "buildah":
            ctr = _check([*eng, "from", "scratch"]).strip()
            try:
                _check([*eng, "add", ctr, str(rootfs), "/"])
                _check([*eng, "config", "--cmd", '["/bin/bash"]', ctr])
                _check([*eng, "commit", "-q", ctr, tag])
            finally:
                subprocess.run([*eng, "rm", ctr], capture_output=True)
        else:
            _check([*eng, "import", "--change", 'CMD ["/bin/bash"]', str(rootfs), tag])
    return tag


def resolve_base(engine: str, base_image: str) -> str:
    """``base_image`` if present or pullable, else the bootstrapped equivalent of the default base."""
    if image_present(engine, base_image) or pull(engine, base_image):
        return base_image
    if base_image != DEFAULT_BASE:
        raise ImageBuildError(f"--base-image {base_image}: neither present here nor pullable")
    print(f"{base_image} cannot be pulled here; using a bootstrapped Debian bookworm (Python 3.11) base",
          flush=True)
    return bootstrap_base(engine)


def reachable(url: str, timeout_s: float = 5.0) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return True
    except Exception:  # DNS, refused, TLS, HTTP errors alike: not usable for the build
        return False


def make_plan(engine: str, *, tag: str, base_image: str, torch: str, host_pip: dict[str, str],
              pip_dir: Path | None, torch_index_reachable: bool = True) -> BuildPlan:
    """Build arguments and mounts: the torch wheel's index and name, and, when ``host_pip`` is
    given and the engine can mount, this machine's pip configuration written to ``pip_dir``.

    Where PyTorch's index cannot be reached but this machine's pip configuration is used, torch
    comes from the configured sources (a local wheel folder holding ``torch==VERSION+VARIANT``)."""
    if torch not in TORCH_VARIANTS:
        raise ImageBuildError(f"--torch {torch!r}: expected one of {', '.join(TORCH_VARIANTS)}")
    use_host = bool(host_pip) and engine != "docker" and pip_dir is not None
    index = TORCH_INDEX.format(variant=torch)
    if use_host and not torch_index_reachable:
        index = index_url(host_pip)
    args = {"BASE_IMAGE": base_image, "TORCH_INDEX_URL": index,
            "TORCH_REQUIREMENT": f"torch=={torch_version()}+{torch}"}
    plan = BuildPlan(engine, tag, base_image, args)
    if use_host:
        (pip_dir / "pip.conf").write_text(config_file_text(host_pip))
        plan.build_args["PIP_CONFIG_FILE"] = PIP_CONFIG_IN_BUILD
        plan.mounts.append((str(pip_dir), str(Path(PIP_CONFIG_IN_BUILD).parent)))
        plan.mounts += [(str(p), str(p)) for p in local_paths(host_pip)]
    return plan


def build_command(plan: BuildPlan) -> list[str]:
    cmd = [plan.engine]
    if plan.engine == "buildah":
        cmd += ["bud", "--isolation", "chroot", "--network", "host", "--layers"]
    else:
        cmd += ["build"]
        if plan.engine == "podman":
            cmd += ["--network", "host", "--layers"]
    cmd += ["-f", str(plan.context / "Dockerfile"), "-t", plan.tag]
    for key, value in plan.build_args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    for host, inside in plan.mounts:
        cmd += ["-v", f"{host}:{inside}:ro"]
    return [*cmd, str(plan.context)]


def inspect_image(engine: str, tag: str) -> dict:
    """{"id", "digest", "size_bytes"} of a built image."""
    eng = [engine]
    if engine == "buildah":
        info = json.loads(_check([*eng, "inspect", "--type", "image", tag]))
        manifest = json.loads(info.get("Manifest") or "{}")
        size = sum(int(layer.get("size", 0)) for layer in manifest.get("layers", []))
        return {"id": "sha256:" + info["FromImageID"], "digest": info.get("FromImageDigest", ""),
                "size_bytes": size}
    info = json.loads(_check([*eng, "image", "inspect", tag]))[0]
    digests = info.get("RepoDigests") or []
    return {"id": info["Id"], "digest": digests[0].partition("@")[2] if digests else "",
            "size_bytes": int(info.get("Size", 0))}


def build(*, tag: str, engine: str = "auto", base_image: str = DEFAULT_BASE, torch: str = "cpu",
          host_pip_config: bool = True, record: Path | None = None) -> dict:
    """Build the image and return (and record) what was built."""
    engine = pick_engine(engine)
    base = resolve_base(engine, base_image)
    host_pip = read_pip_config() if host_pip_config else {}
    if host_pip and engine == "docker":
        print("note: docker's builder cannot mount this machine's pip configuration; pip's defaults apply",
              flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="amopo-pip-") as pip_dir:
        torch_index = TORCH_INDEX.format(variant=torch)
        torch_index_ok = reachable(torch_index + "/")
        if not torch_index_ok:
            print(f"{torch_index} cannot be reached; torch comes from pip's configured sources", flush=True)
        plan = make_plan(engine, tag=tag, base_image=base, torch=torch, host_pip=host_pip, pip_dir=Path(pip_dir),
                         torch_index_reachable=torch_index_ok)
        cmd = build_command(plan)
        print("$ " + " ".join(cmd), flush=True)
        if subprocess.run(cmd).returncode != 0:
            raise ImageBuildError(f"{engine} build of {tag} failed (its output is above)")
    result = {"tag": tag, "engine": engine, "base_image": base, "torch": plan.build_args["TORCH_REQUIREMENT"],
              "build_seconds": round(time.monotonic() - started, 1), **inspect_image(engine, tag)}
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(f".tmp-{record.name}")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(record)
    return result


def _check(cmd: list[str]) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise ImageBuildError(f"`{' '.join(cmd[:4])} ...` failed: {out.stderr.strip()[-600:]}")
    return out.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build_image.sh", description="Build the amopo image from its Dockerfile.")
    parser.add_argument("--tag", default=f"amopo:{project_version()}")
    parser.add_argument("--engine", default="auto", help=f"auto (the first that works of {', '.join(ENGINES)})")
    parser.add_argument("--torch", default="cpu", choices=TORCH_VARIANTS, help="PyTorch build: CPU or a CUDA version")
    parser.add_argument("--base-image", default=DEFAULT_BASE,
                        help="Python 3.11 base; the default is bootstrapped with mmdebstrap where no registry answers")
    parser.add_argument("--no-host-pip-config", action="store_true",
                        help="build with pip's defaults instead of this machine's pip configuration")
    parser.add_argument("--record", default=str(ROOT / "build" / "image.json"),
                        help="where to write the image's id, digest and size (JSON)")
    args = parser.parse_args(argv)
    try:
        result = build(tag=args.tag, engine=args.engine, base_image=args.base_image, torch=args.torch,
                       host_pip_config=not args.no_host_pip_config, record=Path(args.record))
    except ImageBuildError as exc:
        print(f"build_image: error: {exc}", file=sys.stderr)
        return 2
    print(f"built {result['tag']} with {result['engine']} in {result['build_seconds']:.0f} s: id {result['id']}, "
          f"digest {result['digest'] or '-'}, {result['size_bytes'] / 1e9:.2f} GB (recorded in {args.record})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
