#!/usr/bin/env bash
# surgview's two set-up commands (see README):
#   ./dev.sh run    install everything (surgview[train,dev]), then open surgview on the demo case
#   ./dev.sh test   install everything, then run the linter and the test suite
# Both are idempotent: a second run skips what is already installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

VENV="${SURGVIEW_VENV:-.venv}"
# Debian packages: ffmpeg (reference decoder for tests and benchmarks), the libraries the Qt
# wheels load at run time (xcb platform included), a font so offscreen rendering has glyphs,
# Xvfb for a virtual screen where there is no display, e2fsprogs (chattr, used by a test), and
# bubblewrap + desktop-file-utils (the packaging tests: a Python-free sandbox, .desktop validation).
SYSTEM_PACKAGES=(ffmpeg libegl1 libgl1 libxkbcommon0 libfontconfig1 libdbus-1-3 fonts-dejavu-core
                 libxcb-cursor0 libxkbcommon-x11-0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0
                 libxcb-render-util0 libxcb-shape0 xvfb xauth e2fsprogs bubblewrap desktop-file-utils)

log() { printf '\033[1m[surgview]\033[0m %s\n' "$*" >&2; }

install_system_packages() {
    command -v dpkg >/dev/null 2>&1 || { log "not a Debian system: install ${SYSTEM_PACKAGES[*]} yourself"; return; }
    local missing=()
    for pkg in "${SYSTEM_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return
    log "installing system packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

find_python() {
    for py in python3.13 python3.12 python3.11 python3; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            echo "$py"; return
        fi
    done
    log "Python >= 3.11 is required"; exit 1
}

install_python_packages() {
    local stamp="$VENV/.surgview-installed"
    local want
    want="$(cat pyproject.toml | sha256sum | cut -c1-16)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/surgview" ]; then
        return
    fi
    [ -x "$VENV/bin/python" ] || "$(find_python)" -m venv "$VENV"
    local install_log="$VENV/install.log"
    : > "$install_log"
    pip_install() {
        "$VENV/bin/python" -m pip install --disable-pip-version-check "$@" >> "$install_log" 2>&1 || {
            tail -n 30 "$install_log" >&2
            log "pip failed; the whole log is in $install_log"
            exit 1
        }
    }
    local pip=(pip_install)
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        log "NVIDIA GPU found: installing the CUDA build of torch"
        "${pip[@]}" torch
    else
        log "no GPU: installing the CPU build of torch"
        "${pip[@]}" torch==2.13.0
    fi
    log "installing surgview and its dependencies into $VENV"
    "${pip[@]}" -e ".[train,dev]"  # train: `surgview-train demo` (run) and the training tests
    echo "$want" > "$stamp"
}

cmd="${1:-}"
shift || true
case "$cmd" in
    run)
        install_system_packages
        install_python_packages
        demo="$("$VENV/bin/python" -c 'from engine.userdata import demo_dir; print(demo_dir())')"
        # Builds the demo case (again when an older renderer made it) and installs the bundled demo model (again when it changed).
        [ -f "$demo/synth.json" ] || log "building the demo case in $demo"
        "$VENV/bin/surgview-train" demo --out "$demo" >/dev/null
        if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ] && [ -z "${QT_QPA_PLATFORM:-}" ]; then
            log "no display: starting the viewer on a virtual screen (xvfb-run); set DISPLAY to see it"
            exec xvfb-run -a -s "-screen 0 1600x1000x24" "$VENV/bin/surgview" --demo "$@"
        fi
        exec "$VENV/bin/surgview" --demo "$@"
        ;;
    test)
        install_system_packages
        install_python_packages
        log "ruff"
        "$VENV/bin/ruff" check .
        log "pytest"
        export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: ./dev.sh run|test [args...]" >&2
        exit 2
        ;;
esac
