"""scripts/build_image.sh's decisions, without building: the pip configuration carried into the build,
the build arguments and mounts, each engine's command line, and the errors a user meets.

The real build (buildah here) is run by tests/test_image.py; docker and podman cannot run here (no
docker service; podman's runtime cannot start containers in this sandbox), so their command lines
are checked as built, and the engines that do not work are refused with the reason.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from amopo.image import build as image_build
from amopo.image.build import (ImageBuildError, build_command, make_plan, pick_engine, resolve_base,
                               torch_version)
from amopo.image.pip_config import config_file_text, index_url, local_paths, parse_config_list

ROOT = Path(__file__).resolve().parents[1]

CONFIG_LIST = """\
:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.find-links='{wheels}'
global.find-links='/nonexistent/wheels'
global.extra-index-url='file://{index}/simple file:///nonexistent/simple'
global.timeout='60'
install.constraint='{constraints}'
freeze.all='true'
"""


@pytest.fixture
def host_config(tmp_path):
    wheels, index = tmp_path / "wheels", tmp_path / "pypi"
    (index / "simple").mkdir(parents=True)
    (index / "files").mkdir()
    wheels.mkdir()
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("torch<=2.14\n")
    text = CONFIG_LIST.format(wheels=wheels, index=index, constraints=constraints)
    return parse_config_list(text), wheels, index, constraints


def test_pip_config_takes_the_effective_settings_environment_first(host_config):
    settings, wheels, index, constraints = host_config
    assert settings["find-links"] == str(wheels)             # PIP_FIND_LINKS over the file's value
    assert settings["constraint"] == str(constraints)
    assert settings["timeout"] == "60" and "all" not in settings  # freeze's settings are not install's
    ini = config_file_text(settings)
    assert ini.startswith("[global]\n") and f"find-links = {wheels}\n" in ini


def test_local_paths_are_the_existing_ones_and_an_index_comes_with_its_files(host_config):
    settings, wheels, index, constraints = host_config
    paths = local_paths(settings)
    # the index's pages link ../../files/x.whl: its parent is mounted, not just simple/
    assert set(paths) == {wheels, index, constraints, Path("/etc/ssl/certs/ca-certificates.crt")}
    assert index_url(settings) == "https://pypi.org/simple"
    assert index_url({"index-url": "https://mirror.example/simple"}) == "https://mirror.example/simple"


def test_plan_carries_the_torch_build_and_the_machines_pip_configuration(host_config, tmp_path):
    settings, wheels, index, constraints = host_config
    plan = make_plan("buildah", tag="amopo:t", base_image="base:1", torch="cu128", host_pip=settings,
                     pip_dir=tmp_path, torch_index_reachable=True)
    assert plan.build_args == {"BASE_IMAGE": "base:1", "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cu128",
                               "TORCH_REQUIREMENT": f"torch=={torch_version()}+cu128",
                               "PIP_CONFIG_FILE": image_build.PIP_CONFIG_IN_BUILD}
    assert (tmp_path / "pip.conf").read_text() == config_file_text(settings)
    assert (str(tmp_path), str(Path(image_build.PIP_CONFIG_IN_BUILD).parent)) in plan.mounts
    assert (str(wheels), str(wheels)) in plan.mounts and (str(index), str(index)) in plan.mounts
    # PyTorch's index unreachable: the wheel comes from the configured sources
    offline = make_plan("buildah", tag="amopo:t", base_image="base:1", torch="cpu", host_pip=settings,
                        pip_dir=tmp_path, torch_index_reachable=False)
    assert offline.build_args["TORCH_INDEX_URL"] == "https://pypi.org/simple"
    assert offline.build_args["TORCH_REQUIREMENT"].endswith("+cpu")
    # docker's builder cannot mount: pip's defaults, PyTorch's index
    docker = make_plan("docker", tag="amopo:t", base_image="base:1", torch="cpu", host_pip=settings,
                       pip_dir=tmp_path, torch_index_reachable=False)
    assert docker.mounts == [] and "PIP_CONFIG_FILE" not in docker.build_args
    assert docker.build_args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    with pytest.raises(ImageBuildError, match="--torch 'rocm'"):
        make_plan("buildah", tag="t", base_image="b", torch="rocm", host_pip={}, pip_dir=tmp_path)


@pytest.mark.parametrize("engine", ["docker", "podman", "buildah"])
def test_each_engine_builds_the_dockerfile_with_the_plans_arguments(engine, tmp_path):
    plan = make_plan(engine, tag="reg/amopo:1", base_image="python:3.11-slim", torch="cpu",
                     host_pip={"find-links": str(tmp_path)}, pip_dir=tmp_path)
    cmd = build_command(plan)
    assert cmd[0] == engine and cmd[-1] == str(ROOT)
    assert cmd[cmd.index("-f") + 1] == str(ROOT / "Dockerfile") and cmd[cmd.index("-t") + 1] == "reg/amopo:1"
    args = [cmd[i + 1] for i, t in enumerate(cmd) if t == "--build-arg"]
    assert "BASE_IMAGE=python:3.11-slim" in args and f"TORCH_REQUIREMENT=torch=={torch_version()}+cpu" in args
    volumes = [cmd[i + 1] for i, t in enumerate(cmd) if t == "-v"]
    if engine == "docker":
        assert cmd[1] == "build" and volumes == []
    else:
        assert f"{tmp_path}:{tmp_path}:ro" in volumes and "--layers" in cmd
        assert cmd[1] == ("bud" if engine == "buildah" else "build")
    if engine == "buildah":
        assert cmd[cmd.index("--isolation") + 1] == "chroot" and cmd[cmd.index("--network") + 1] == "host"


def test_an_engine_that_does_not_run_is_refused_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))    # no engine on PATH at all
    with pytest.raises(ImageBuildError, match="no image engine works here: install docker, podman or buildah"):
        pick_engine("auto")
    with pytest.raises(ImageBuildError, match="--engine podman: it does not run here"):
        pick_engine("podman")
    with pytest.raises(ImageBuildError, match="--engine 'kaniko'"):
        pick_engine("kaniko")


def test_docker_without_its_service_is_not_picked():
    """This machine has a docker client but no docker service: `docker info` fails, so docker is skipped."""
    import shutil

    if shutil.which("docker") is None:
        pytest.skip("no docker client here")
    assert image_build.engine_works("docker") is (
        subprocess.run(["docker", "info"], capture_output=True).returncode == 0)


def test_a_missing_base_without_mmdebstrap_says_what_to_install(monkeypatch):
    import shutil

    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed")
    real_which = shutil.which
    monkeypatch.setattr(image_build.shutil, "which", lambda name: None if name == "mmdebstrap" else real_which(name))
    monkeypatch.setattr(image_build, "image_present", lambda engine, image: False)
    with pytest.raises(ImageBuildError, match="mmdebstrap is not installed.*apt-get install mmdebstrap"):
        image_build.bootstrap_base("buildah", "localhost/amopo-test-base:none")
    # a base of the user's own choosing is never silently replaced
    with pytest.raises(ImageBuildError, match="--base-image registry.invalid/none:1: neither present here nor "
                                              "pullable"):
        resolve_base("buildah", "registry.invalid/none:1")


def test_the_script_reports_errors_in_one_line_and_exits_2(tmp_path):
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "build_image.sh"), "--engine", "podman", "--record",
                           str(tmp_path / "image.json")], capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode == 0:
        pytest.skip("podman works here")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("build_image: error: --engine podman")
    assert not (tmp_path / "image.json").exists()
    helptext = subprocess.run(["bash", str(ROOT / "scripts" / "build_image.sh"), "--help"], capture_output=True,
                              text=True, check=True).stdout
    for flag in ("--tag", "--engine", "--torch", "--base-image", "--no-host-pip-config", "--record"):
        assert flag in helptext


def test_every_flag_reaches_the_build(monkeypatch, tmp_path, capsys):
    """The flags' wiring (the build they drive is the one tests/test_image.py runs for real)."""
    seen = {}

    def fake_build(**kw):
        seen.update(kw)
        return {"tag": kw["tag"], "engine": "buildah", "build_seconds": 1.0, "id": "sha256:1", "digest": "",
                "size_bytes": 2_000_000_000}

    monkeypatch.setattr(image_build, "build", fake_build)
    record = tmp_path / "r.json"
    assert image_build.main(["--tag", "reg/amopo:2", "--engine", "buildah", "--torch", "cu126", "--base-image",
                             "base:3", "--no-host-pip-config", "--record", str(record)]) == 0
    assert seen == {"tag": "reg/amopo:2", "engine": "buildah", "base_image": "base:3", "torch": "cu126",
                    "host_pip_config": False, "record": record}
    assert "built reg/amopo:2 with buildah" in capsys.readouterr().out
