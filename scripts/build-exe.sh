#!/usr/bin/env bash
# Build dist/mk8s-linux-amd64: mk8s as one executable file for the air gap (PyInstaller
# one-file). Prints its version and sha256. A build whose inputs did not change is
# reused (dist/mk8s-linux-amd64.inputs records their hash); FORCE=1 rebuilds.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh >/dev/null
.venv/bin/python -m pip install -q 'pyinstaller>=6.10,<7'

out=dist/mk8s-linux-amd64
inputs=$( (find mk8s schemas -type f \( -name '*.py' -o -name '*.json' \) -print0 | sort -z | xargs -0 sha256sum;
           sha256sum pyproject.toml scripts/build-exe.sh scripts/mk8s-entry.py;
           .venv/bin/python -m pip freeze --exclude-editable) | sha256sum | cut -d' ' -f1)
if [ "${FORCE:-0}" != 1 ] && [ -x "$out" ] && [ "$(cat "$out.inputs" 2>/dev/null)" = "$inputs" ]; then
  echo "build-exe: inputs unchanged, reusing $out"
else
  rm -f "$out" "$out.inputs"
  # Reproducible where PyInstaller allows: fixed hash seed and timestamps.
  export PYTHONHASHSEED=0
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 1700000000)
  export SOURCE_DATE_EPOCH
  .venv/bin/pyinstaller --noconfirm --clean --log-level WARN --onefile --strip \
    --name mk8s-linux-amd64 --distpath dist --workpath build/pyinstaller \
    --specpath build/pyinstaller \
    --add-data "$PWD/schemas:mk8s/schemas" \
    --collect-submodules mk8s --collect-data jsonschema_specifications \
    scripts/mk8s-entry.py
  echo "$inputs" > "$out.inputs"
fi
echo "build-exe: $("$out" --version) -> $out"
echo "build-exe: sha256 $(sha256sum "$out" | cut -d' ' -f1)"
