#!/usr/bin/env bash
# Installs what `make run` and `make test` need, idempotently: Debian packages and a virtualenv.
# Re-running is cheap: each step is skipped when its stamp is newer than its inputs.
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium: the web UI tests drive it; nodejs + npm: the tests' OpenID provider (oidc-provider);
# bubblewrap + python3-venv + python3-pip: the sandbox that builds tool environments with the
# host's Python.
# slurmd + slurmctld + slurm-client + munge: the tests' one-node Slurm cluster.
APT_PACKAGES=(postgresql dcmtk chromium bubblewrap python3-venv python3-pip
  slurmd slurmctld slurm-client munge tesseract-ocr tesseract-ocr-eng fonts-dejavu-core)
command -v node >/dev/null && command -v npm >/dev/null || APT_PACKAGES+=(nodejs npm)
# `make bench` also wants GDCM's gdcmanon as a baseline.
[ "${1:-}" = "--bench" ] && APT_PACKAGES+=(libgdcm-tools openssl)
PYTHON=${PYTHON:-python3}
VENV=.venv

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Job sandboxes start as this unprivileged user when insitu runs as root (INSITU_JOB_USER).
if [ "$(id -u)" -eq 0 ] && ! id insitu-job >/dev/null 2>&1; then
  echo "bootstrap: creating the system user insitu-job (job sandboxes start as it)"
  useradd --system --no-create-home --shell /usr/sbin/nologin insitu-job
fi

mkdir -p .stamps
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f .stamps/pip ] || [ pyproject.toml -nt .stamps/pip ]; then
  echo "bootstrap: installing Python packages into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[dev]'
  touch .stamps/pip
fi
if [ ! -f .stamps/npm ] || [ tests/oidc/package-lock.json -nt .stamps/npm ] \
    || [ ! -d tests/oidc/node_modules ]; then
  echo "bootstrap: installing the tests' OpenID provider (npm ci in tests/oidc)"
  npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
  touch .stamps/npm
fi
# The wheels of the demo's example tools, for their sandboxed environments (no network there):
# downloaded once with the host's Python (the one tool environments run), hashes checked.
WHEELHOUSE=.wheelhouse
TOOL_REQUIREMENTS=(src/insitu/tools/examples/*/requirements.txt)
stale=0
for requirements in "${TOOL_REQUIREMENTS[@]}"; do
  [ -f .stamps/wheelhouse ] && [ ! "$requirements" -nt .stamps/wheelhouse ] || stale=1
done
if ((stale)); then
  echo "bootstrap: downloading the example tools' wheels into $WHEELHOUSE"
  for requirements in "${TOOL_REQUIREMENTS[@]}"; do
    /usr/bin/python3 -m pip download -q --only-binary=:all: --require-hashes \
      -d "$WHEELHOUSE" -r "$requirements"
  done
  touch .stamps/wheelhouse
fi
