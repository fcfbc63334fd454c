# Shared by the runner scripts: find cbl-search, pass every extra argument through.
set -euo pipefail
CBL="${CBL_SEARCH:-cbl-search}"
if ! command -v "$CBL" >/dev/null 2>&1; then
  echo "cbl-search not found: install cbl first (pip install -e .) or set CBL_SEARCH" >&2
  exit 2
fi
