#!/usr/bin/env bash
# Print the path of a CPython 3.10 interpreter (nnabla ships CPU wheels for CPython <= 3.10 only).
# Looks at $PYTHON310, python3.10 on PATH, pyenv's versions, uv's managed Pythons, then common paths.
set -u
is310() { [ -n "$1" ] && [ -x "$1" ] && "$1" -c 'import sys, venv; sys.exit(0 if sys.version_info[:2] == (3, 10) else 1)' >/dev/null 2>&1; }
candidates=()
[ -n "${PYTHON310:-}" ] && candidates+=("$PYTHON310")
command -v python3.10 >/dev/null 2>&1 && candidates+=("$(command -v python3.10)")
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root 2>/dev/null)
  for p in "$root"/versions/3.10*/bin/python; do candidates+=("$p"); done
fi
for p in "$HOME"/.pyenv/versions/3.10*/bin/python; do candidates+=("$p"); done
if command -v uv >/dev/null 2>&1; then
  p=$(uv python find 3.10 2>/dev/null) && candidates+=("$p")
fi
candidates+=(/usr/bin/python3.10 /usr/local/bin/python3.10 /opt/python/3.10*/bin/python3)
for c in "${candidates[@]}"; do
  if is310 "$c"; then echo "$c"; exit 0; fi
done
cat >&2 <<'MSG'
error: no Python 3.10 interpreter found (nnabla publishes CPU wheels for CPython <= 3.10 only).
Install one, e.g. `pyenv install 3.10`, `uv python install 3.10` or `apt-get install python3.10 python3.10-venv`,
or point PYTHON310=/path/to/python3.10 at it, then run make again.
MSG
exit 1
