"""Run a command as on a workstation without Python: bubblewrap with only the system's essentials.

Bound read-only: ``/usr`` (with the merged-/usr links ``/bin``, ``/lib``, ``/lib64``, ``/sbin``) and
``/etc``; fresh ``/proc``, ``/dev``, ``/tmp``. Not there at all: ``/work`` (the source tree and
its virtual environment), ``/root`` (pyenv), everything else. Python is hidden too: every
``/usr/bin/python*`` is covered by an empty non-executable file and the system's Python library
folders by empty tmpfs mounts. The network is unshared. The environment is cleared except PATH,
HOME (a given folder, writable) and LANG. Without bubblewrap, ``env -i`` with the same variables
is used, which clears the environment but leaves the file system as it is (``isolated`` says which).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

BWRAP = shutil.which("bwrap")
isolated = BWRAP is not None
PATH = "/usr/local/bin:/usr/bin:/bin"


def _python_hiding() -> list[str]:
    args: list[str] = []
    programs = {os.path.realpath(p) for p in glob.glob("/usr/bin/python*") + glob.glob("/usr/local/bin/python*")}
    for real in sorted(programs):
        if os.path.isfile(real) and os.access(real, os.X_OK) and real.startswith("/usr/"):
            args += ["--ro-bind", "/dev/null", real]
    for folder in sorted(glob.glob("/usr/lib/python3*") + glob.glob("/usr/local/lib/python3*")):
        if os.path.isdir(folder):
            args += ["--tmpfs", folder]
    return args


def command(argv: list[str], home: Path, binds: dict[Path, str] | None = None) -> list[str]:
    """The command line that runs ``argv`` in the sandbox; ``binds`` maps host folders to sandbox paths (read-only)."""
    env = {"PATH": PATH, "HOME": "/home/user" if isolated else str(home), "LANG": "C.UTF-8"}
    if not isolated:
        return ["env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv]
    args = [BWRAP, "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for link in ("bin", "lib", "lib64", "sbin"):
        target = os.readlink(f"/{link}") if os.path.islink(f"/{link}") else None
        if target is not None:
            args += ["--symlink", target, f"/{link}"]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm", "--tmpfs", "/tmp"]
    args += _python_hiding()
    for host, inside in (binds or {}).items():
        args += ["--ro-bind", str(host), inside]
    args += ["--bind", str(home), "/home/user", "--chdir", "/home/user"]
    args += ["--unshare-all", "--die-with-parent", "--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    return [*args, *argv]


def run(
    argv: list[str], home: Path, binds: dict[Path, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(command(argv, home, binds), capture_output=True, text=True, timeout=timeout)
