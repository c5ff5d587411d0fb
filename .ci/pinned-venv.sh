# Sourced by the CI scripts (tests/clients/run.sh, docker/check.sh): a Python
# venv holding a requirements file's pins, made anew only when the pins or
# the Python change. The caller defines `say` and `$cache`.

# pinned_venv VENV REQUIREMENTS
pinned_venv() {
  local venv=$1 requirements=$2 stamp
  stamp=$(python3 --version; sha256sum <"$requirements" | cut -d' ' -f1)
  if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$stamp" ]; then
    say "pip install -r $(basename "$(dirname "$requirements")")/$(basename "$requirements") (changed or first run)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --cache-dir "$cache/pip" --disable-pip-version-check -r "$requirements"
    printf '%s' "$stamp" >"$venv/.installed"
  fi
}
