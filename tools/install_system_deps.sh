#!/usr/bin/env bash
# System packages the tests need (Debian 12), installed only where missing:
#   slurm-wlm slurmdbd mariadb-server munge   the single-node SLURM of tests/test_slurm.py
#                                             (tools/slurm_local.sh)
#   chromium                                  headless browser that opens the Snakemake report
#                                             and the view pages (tests/test_view.py)
#   fonts-dejavu-core                         a font for chromium's rendering
#   npm (nodejs)                              fetches the view pages' viewer, NGL, pinned in
#                                             neural_em/view/assets.py (tools/fetch_viewer_js.py)
#
#   tools/install_system_deps.sh            # idempotent; does nothing when all are installed
#
# Non-interactive (DEBIAN_FRONTEND=noninteractive). No service is started by the install: a
# temporary policy-rc.d refuses it (the test starts its own daemons in a private folder), and is
# removed again afterwards. Needs root (or sudo) for apt-get.
set -euo pipefail

PACKAGES=(slurm-wlm slurmdbd mariadb-server munge chromium fonts-dejavu-core)
HERE=$(cd "$(dirname "$0")" && pwd)

# The view pages' JavaScript (not in git): fetched once with npm pack, checked by its SHA-256.
fetch_viewer_js() {
    if ! command -v npm >/dev/null 2>&1; then
        echo "install_system_deps: npm missing: installing nodejs and npm"
        need_root
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm
    fi
    python3 "$HERE/fetch_viewer_js.py"
}

SUDO=()
need_root() {
    if [[ $(id -u) != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || { echo "install_system_deps: need root for apt-get" >&2; exit 1; }
        SUDO=(sudo)
    fi
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then
    echo "install_system_deps: all installed (${PACKAGES[*]})"
    fetch_viewer_js
    exit 0
fi
need_root

POLICY=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e $POLICY ]]; then
    printf '#!/bin/sh\n# written by neural-em tools/install_system_deps.sh\nexit 101\n' \
        | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    own_policy=1
fi
cleanup() { if ((own_policy)); then "${SUDO[@]}" rm -f "$POLICY"; fi; }
trap cleanup EXIT

echo "install_system_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    "${missing[@]}"
fetch_viewer_js
echo "install_system_deps: done"
