#!/usr/bin/env bash
# Install this surgview bundle for the current user: no root, no network, no Python needed.
#   ./install.sh [--prefix DIR]              bundle -> DIR/opt/surgview, commands in DIR/bin,
#                                            menu entry and icons in DIR/share (DIR: ~/.local)
#   ./install.sh --uninstall [--prefix DIR]  remove them again (cases and settings are kept)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prefix="$HOME/.local"
action=install
die() { echo "install.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; prefix="$2"; shift 2 ;;
        --prefix=*) prefix="${1#*=}"; shift ;;
        --uninstall) action=uninstall; shift ;;
        -h|--help) sed -n '2,5p' "${BASH_SOURCE[0]}" | cut -c3-; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
mkdir -p "$prefix" || die "cannot create $prefix"
prefix="$(cd "$prefix" && pwd)"
opt="$prefix/opt/surgview"
bin="$prefix/bin"
apps="$prefix/share/applications"
icons="$prefix/share/icons/hicolor"
commands=(surgview surgview-engine surgview-train)

refresh_menus() {
    command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "$apps" 2>/dev/null || true
    command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q -t "$icons" 2>/dev/null || true
}

if [ "$action" = uninstall ]; then
    for name in "${commands[@]}"; do
        link="$bin/$name"
        if [ -L "$link" ] && [ "$(readlink "$link")" = "$opt/surgview" ]; then rm -f "$link"; fi
    done
    rm -f "$apps/surgview.desktop"
    find "$icons" -path '*/apps/surgview.*' -delete 2>/dev/null || true
    rm -rf "$opt"
    refresh_menus
    echo "surgview removed from $prefix (cases and settings in ~/.local/share/surgview and ~/.config/surgview are kept)"
    exit 0
fi

[ -x "$here/surgview" ] && [ -d "$here/_internal" ] || die "run install.sh from an unpacked surgview bundle"
[ "$here" != "$opt" ] || die "this bundle is already installed at $opt"
mkdir -p "$prefix/opt" "$bin" "$apps" "$icons"
# Copy next to the old install, then swap: an interrupted copy never leaves half a program.
staging="$opt.new.$$"
trap 'rm -rf "$staging"' EXIT
cp -a "$here" "$staging"
rm -rf "$opt.old"
[ -e "$opt" ] && mv "$opt" "$opt.old"
mv "$staging" "$opt"
rm -rf "$opt.old"
trap - EXIT

ln -sfn "$opt/surgview" "$bin/surgview"
ln -sfn "$opt/surgview" "$bin/surgview-engine"
if [ -f "$opt/TRAINING-STACK" ]; then ln -sfn "$opt/surgview" "$bin/surgview-train"; fi
sed -e "s|^Exec=.*|Exec=\"$opt/surgview\" %f|" -e "s|^TryExec=.*|TryExec=$opt/surgview|" \
    "$opt/share/applications/surgview.desktop" > "$apps/surgview.desktop"
chmod 644 "$apps/surgview.desktop"
cp -R "$opt/share/icons/hicolor/." "$icons/"
refresh_menus
echo "surgview installed in $opt"
echo "  menu entry: $apps/surgview.desktop"
echo "  command:    $bin/surgview  (try: surgview --demo)"
case ":$PATH:" in *":$bin:"*) ;; *) echo "  note: $bin is not on PATH; the menu entry works regardless" ;; esac
