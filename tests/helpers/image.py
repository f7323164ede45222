"""Running commands inside the project's image as a Kubernetes pod would: as the image's USER, with the
image's filesystem read-only apart from the workspace volume and /tmp.

No container runtime can run here (podman/crun: setrlimit is not permitted), but buildah can, with
chroot isolation and the host's network. Each top-level folder of the image's root filesystem is
bind-mounted read-only over itself; /etc stays as buildah needs it (it writes hosts and
resolv.conf there) and is owned by root, which the tests check. The workspace is a host folder
mounted at /workspace, /tmp a fresh tmpfs per command.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path


# Top-level folders left writable: kernel and device file systems, the mounts below, and /etc (see above).
NOT_READ_ONLY = {"dev", "proc", "sys", "tmp", "workspace", "etc", "run"}


def image_tools_missing() -> str | None:
    """Why images cannot be built and run here, or None."""
    if os.geteuid() != 0:
        return "building and running images with buildah needs root here"
    missing = [t for t in ("buildah", "mmdebstrap") if shutil.which(t) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (scripts/test.sh installs them with apt-get as root)"
    return None


class ImageRunner:
    """A working container of ``image`` whose commands see ``workspace`` at /workspace."""

    def __init__(self, image: str, workspace: Path):
        self.engine = ["buildah"]
        self.image = image
        self.workspace = workspace
        self.container = self._check("from", "--pull=never", image).strip().splitlines()[-1]
        self.rootfs = Path(self._check("mount", self.container).strip())
        config = json.loads(self._check("inspect", "--type", "image", image))
        self.config = config["OCIv1"]["config"]

    def _check(self, *args: str) -> str:
        out = subprocess.run([*self.engine, *args], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"buildah {' '.join(args[:3])}: {out.stderr.strip()[-500:]}")
        return out.stdout

    @property
    def entrypoint(self) -> list[str]:
        return list(self.config.get("Entrypoint") or [])

    @property
    def user(self) -> str:
        return self.config.get("User", "")

    def read_only_dirs(self) -> list[str]:
        return sorted(p.name for p in self.rootfs.iterdir()
                      if p.is_dir() and not p.is_symlink() and p.name not in NOT_READ_ONLY)

    def argv(self, command: list[str], *, env: dict[str, str] | None = None,
             mounts: list[tuple[Path, str]] = (), workdir: str | None = None) -> list[str]:
        """``buildah run`` for ``command``; ``mounts`` are extra (host path, image path) read-only binds."""
        args = [*self.engine, "run", "--isolation", "chroot", "--network", "host"]
        for name in self.read_only_dirs():
            args += ["-v", f"{self.rootfs / name}:/{name}:ro"]
        args += ["-v", f"{self.workspace}:/workspace", "--mount", "type=tmpfs,destination=/tmp"]
        for host, inside in mounts:
            # the mount point, made in the container's own layer as a container runtime makes it
            (self.rootfs / inside.lstrip("/")).mkdir(parents=True, exist_ok=True)
            args += ["-v", f"{host}:{inside}:ro"]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        if workdir:
            args += ["--workingdir", workdir]
        return [*args, self.container, "--", *command]

    def run(self, command: list[str], *, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(command, **kw), capture_output=True, text=True, timeout=timeout)

    def start(self, command: list[str], log: Path, **kw) -> subprocess.Popen:
        """``command`` in the background (its own process group), output to ``log``."""
        with open(log, "wb") as out:
            return subprocess.Popen(self.argv(command, **kw), stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    @staticmethod
    def stop(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)

    def close(self) -> None:
        subprocess.run([*self.engine, "umount", self.container], capture_output=True)
        subprocess.run([*self.engine, "rm", self.container], capture_output=True)
