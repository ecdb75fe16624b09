#!/usr/bin/env bash
# Runs the Python nb_aiopool peer benchmark (PyPI `nb-aiopool==1.0`, class NbAioPool).
# Creates bench/.venv (git-ignored) on first use. Arguments go to peer_bench.py, e.g.
#   bash bench/python/run_peer.sh --workload=tiny --tasks=1000000 --concurrency=1000
# It prints one line: RESULT variant=python ... (the same format as `compare`).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$(cd "$here/.." && pwd)/.venv"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import nb_aiopool" 2>/dev/null; then
    echo "run_peer.sh: creating $venv with nb-aiopool==1.0" >&2
    "$python" -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "nb-aiopool==1.0" >&2
fi
exec "$venv/bin/python" "$here/peer_bench.py" "$@"
