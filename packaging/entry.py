"""The desktop bundle's program: the viewer, or the engine / training command line by program name.

``multiprocessing.freeze_support()`` must run first: the viewer starts its engine with the
``spawn`` method, which in a frozen bundle re-runs this executable (``sys.executable``) with
``--multiprocessing-fork`` (and the resource tracker with ``-c``); PyInstaller's multiprocessing
hook makes ``freeze_support`` recognise those arguments and run the child instead of the viewer.
The install script links ``surgview-engine`` (and ``surgview-train`` when the bundle has the
training stack) to this same executable.
"""

from __future__ import annotations

import multiprocessing
import os
import sys


def main() -> int:
    name = os.path.basename(sys.argv[0])
    if name == "surgview-engine":
        from engine.cli import main as command
    elif name == "surgview-train":
        try:
            from train.cli import main as command
        except ImportError:
            print("surgview-train: this bundle was built without the training stack (build.py --with-train)")
            return 2
    else:
        from app.main import main as command
    return command()


if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
