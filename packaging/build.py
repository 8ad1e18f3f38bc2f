"""Build the surgview desktop bundle (PyInstaller, one folder) with its menu entry, icons and installer.

    python packaging/build.py [--variant onnx|cpu|gpu] [--with-train] [--demo-dir DIR | --no-demo]
                              [--dist DIR] [--skip-check] [--tar]

Variants: ``onnx`` (default) has no torch and no transformers: its engine runs the model
folder's ``onnx/`` export with onnxruntime (the demo model ships one); ``cpu`` runs the
transformers backend on torch's CPU build; ``gpu`` keeps the CUDA libraries of a CUDA torch.

Steps: check that the installed torch (or onnxruntime and the demo's export) suits the variant;
check that nothing the viewer and its engine import at run time is excluded (``runtime_modules.py``,
a real model load and generation); build the demo case and model with ``surgview-train demo``
(the build's own demo folder is refreshed each time) to ship inside the bundle; render the SVG
icon to PNG sizes with Qt; run PyInstaller on ``surgview.spec``; add ``install.sh``, the
``.desktop`` entry and the icons; write ``BUILD-INFO.json`` with the sizes.
The result is ``<dist>/surgview/``: run ``<dist>/surgview/install.sh`` to install it.

One folder rather than one file: a one-file bundle unpacks its 0.4–1.2 GB to a temporary folder at
every start; pyside6-deploy (Nuitka) compiles torch and transformers to C first, which takes
hours on a small machine and gains nothing at run time, where torch's own libraries dominate.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
sys.path.insert(0, str(HERE))

import bundle_config  # noqa: E402


class BuildError(Exception):
    """A build that cannot go on; the message says why in one line."""


@dataclass
class BuildOptions:
    variant: str = "onnx"
    with_train: bool = False
    demo_dir: Path | None = ROOT / "build" / "pkg" / "demo"
    dist: Path = ROOT / "dist"
    work: Path = ROOT / "build" / "pkg"
    check: bool = True
    tar: bool = False


def log(message: str) -> None:
    print(f"[build] {message}", file=sys.stderr, flush=True)


def torch_cuda_version() -> str | None:
    """The CUDA version the installed torch was built for (None: a CPU build), without importing it here."""
    out = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.version.cuda or '')"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip() or None


def check_variant(variant: str) -> None:
    if variant == "onnx":
        if importlib.util.find_spec("onnxruntime") is None:
            raise BuildError("the onnx variant needs onnxruntime in the build environment (pip install onnxruntime)")
        return
    cuda = torch_cuda_version()
    if variant == "cpu" and cuda:
        raise BuildError(
            f"the installed torch is a CUDA {cuda} build; a CPU bundle is built from the CPU wheel "
            "(pip install torch --index-url https://download.pytorch.org/whl/cpu), or use --variant gpu"
        )
    if variant == "gpu" and not cuda:
        raise BuildError("the installed torch has no CUDA (torch.version.cuda is None): install a CUDA build of torch")


def runtime_modules(model_dir: Path | None, variant: str = "cpu") -> list[str]:
    """What the viewer and engine import in a real run (see runtime_modules.py); the onnx variant's
    run uses the onnx backend with the torch stack unimportable, as in that bundle."""
    backend = "onnx" if variant == "onnx" else "transformers"
    cmd = [sys.executable, str(HERE / "runtime_modules.py"), "--backend", backend]
    cmd += [str(model_dir)] if model_dir else []
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise BuildError(f"runtime_modules.py failed: {out.stderr.strip().splitlines()[-1:]}")
    return out.stdout.split()


def excluded_but_needed(modules: list[str], variant: str, with_train: bool) -> list[str]:
    """Modules a run imports that the build would leave out (the tolerated optional ones aside)."""
    names = bundle_config.excludes(variant, with_train)
    hits = {bundle_config.excluded(m, names) for m in modules}
    return sorted(h for h in hits if h and h not in bundle_config.OPTIONAL)


def build_demo(demo_dir: Path, refresh: bool) -> None:
    """``surgview-train demo`` into ``demo_dir`` when it is incomplete, or (``refresh``: the build's own
    folder) always: it copies the bundled demo model over an older one and remakes a case an older renderer made."""
    if not refresh and (demo_dir / "synth.json").is_file() and (demo_dir / "model" / "surgview.json").is_file():
        log(f"demo case and model: {demo_dir} (present)")
        return
    log(f"demo case and model in {demo_dir} (surgview-train demo)")
    subprocess.run(
        [sys.executable, "-m", "train.cli", "demo", "--out", str(demo_dir), "--quiet"],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )


def check_demo_export(model_dir: Path) -> None:
    """The onnx bundle runs the demo model from its onnx/ export: refuse to ship one without it."""
    sys.path.insert(0, str(ROOT))
    from engine.backends.onnx.layout import OnnxDirError, read_onnx_dir

    try:
        read_onnx_dir(model_dir)
    except OnnxDirError as exc:
        raise BuildError(f"the onnx variant ships the demo model's onnx/ export: {exc}") from None


def render_icons(svg: Path, out: Path, sizes: tuple[int, ...] = ICON_SIZES) -> list[Path]:
    """``hicolor/<n>x<n>/apps/surgview.png`` for each size, plus the SVG as ``scalable``, rendered by QtSvg."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _app = QGuiApplication.instance() or QGuiApplication([])
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise BuildError(f"{svg}: not an SVG Qt can render")
    written = []
    for size in sizes:
        image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
        painter.end()
        path = out / f"{size}x{size}" / "apps" / "surgview.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not image.save(str(path), "PNG"):
            raise BuildError(f"could not write {path}")
        written.append(path)
    scalable = out / "scalable" / "apps" / "surgview.svg"
    scalable.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(svg, scalable)
    return [*written, scalable]


def run_pyinstaller(options: BuildOptions) -> Path:
    spec_options = {
        "variant": options.variant,
        "with_train": options.with_train,
        "demo_dir": str(options.demo_dir) if options.demo_dir else None,
    }
    env = {**os.environ, "SURGVIEW_BUILD_OPTIONS": json.dumps(spec_options), "QT_QPA_PLATFORM": "offscreen"}
    logfile = options.work / "pyinstaller.log"
    cmd = [
        sys.executable,
        "-m",
        "PyInstaller",
        "--noconfirm",
        "--log-level=WARN",
        "--distpath",
        str(options.dist),
        "--workpath",
        str(options.work / "pyinstaller"),
        str(HERE / "surgview.spec"),
    ]
    log(f"PyInstaller ({options.variant}{', with training stack' if options.with_train else ''}); log: {logfile}")
    with logfile.open("w") as fh:
        done = subprocess.run(cmd, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = logfile.read_text(errors="replace").strip().splitlines()[-5:]
        raise BuildError("PyInstaller failed: " + " | ".join(tail))
    return options.dist / "surgview"


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def largest_parts(internal: Path, count: int = 12) -> list[tuple[str, int]]:
    parts = [
        (p.name, tree_bytes(p) if p.is_dir() else p.stat().st_size) for p in internal.iterdir() if not p.is_symlink()
    ]
    return sorted(parts, key=lambda kv: -kv[1])[:count]


def finish_bundle(bundle: Path, options: BuildOptions, icons: Path) -> dict:
    """Installer, menu entry, icons and BUILD-INFO.json beside the executable."""
    shutil.copy2(HERE / "install.sh", bundle / "install.sh")
    (bundle / "install.sh").chmod(0o755)
    share = bundle / "share"
    shutil.rmtree(share, ignore_errors=True)
    (share / "applications").mkdir(parents=True)
    shutil.copy2(HERE / "surgview.desktop", share / "applications" / "surgview.desktop")
    shutil.copytree(icons, share / "icons" / "hicolor")
    marker = bundle / "TRAINING-STACK"
    if options.with_train:
        marker.write_text("this bundle includes surgview-train\n")
    else:
        marker.unlink(missing_ok=True)
    info = {
        "variant": options.variant,
        "with_train": options.with_train,
        "demo": options.demo_dir is not None,
        "bytes": tree_bytes(bundle),
        "largest": largest_parts(bundle / "_internal"),
        "excluded_modules": sorted(bundle_config.excludes(options.variant, options.with_train)),
        "pruned_patterns": list(bundle_config.PRUNE_PATTERNS),
        "python": sys.version.split()[0],
    }
    (bundle / "BUILD-INFO.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def build(options: BuildOptions) -> Path:
    t0 = time.monotonic()
    options.work.mkdir(parents=True, exist_ok=True)
    check_variant(options.variant)
    if options.demo_dir is not None:
        build_demo(options.demo_dir, refresh=options.demo_dir == BuildOptions.demo_dir)
        if options.variant == "onnx":
            check_demo_export(options.demo_dir / "model")
    if options.check:
        model = options.demo_dir / "model" if options.demo_dir else None
        log(f"checking the excludes against a real run (runtime_modules.py, {options.variant} variant)")
        needed = excluded_but_needed(runtime_modules(model, options.variant), options.variant, options.with_train)
        if needed:
            raise BuildError(f"the excludes leave out modules a run imports: {', '.join(needed)}")
    icons = options.work / "icons"
    shutil.rmtree(icons, ignore_errors=True)
    render_icons(HERE / "icons" / "surgview.svg", icons)
    bundle = run_pyinstaller(options)
    info = finish_bundle(bundle, options, icons)
    log(f"bundle: {bundle} ({info['bytes'] / 1e6:.0f} MB) in {time.monotonic() - t0:.0f} s")
    for name, size in info["largest"]:
        log(f"  {size / 1e6:8.1f} MB  _internal/{name}")
    if options.tar:
        archive = options.dist / f"surgview-linux-x86_64-{options.variant}.tar.gz"
        log(f"archiving {archive}")
        with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
            tar.add(bundle, arcname="surgview")
        log(f"archive: {archive.stat().st_size / 1e6:.0f} MB")
    return bundle


def parse_args(argv: list[str] | None) -> BuildOptions:
    parser = argparse.ArgumentParser(prog="packaging/build.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variant",
        choices=bundle_config.VARIANTS,
        default=BuildOptions.variant,
        help="onnx (default): onnxruntime, no torch; cpu: torch without CUDA; gpu: torch with its CUDA libraries",
    )
    parser.add_argument("--with-train", action="store_true", help="keep the training stack (surgview-train)")
    parser.add_argument("--demo-dir", type=Path, help="demo folder to ship (built by surgview-train demo if missing)")
    parser.add_argument("--no-demo", action="store_true", help="ship no demo case and model")
    parser.add_argument("--dist", type=Path, default=BuildOptions.dist, help="output folder (default: dist/)")
    parser.add_argument("--skip-check", action="store_true", help="skip the run-time import check of the excludes")
    parser.add_argument("--tar", action="store_true", help="also write a .tar.gz of the bundle")
    args = parser.parse_args(argv)
    options = BuildOptions(
        variant=args.variant,
        with_train=args.with_train,
        dist=args.dist.resolve(),
        check=not args.skip_check,
        tar=args.tar,
    )
    if args.no_demo:
        options.demo_dir = None
    elif args.demo_dir:
        options.demo_dir = args.demo_dir.resolve()
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        build(options)
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"build.py: {' '.join(map(str, exc.cmd))} exited with {exc.returncode}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
