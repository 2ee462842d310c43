#!/usr/bin/env bash
# CI: installing smto keeps the torch that a virtual environment already has.
#
# In a fresh virtual environment (under a temporary directory, removed afterwards): install
# torch (the version of requirements/constraints.txt: a release in smto's supported range),
# then `pip install` smto from a copy of this checkout the ordinary way (no constraints file).
# Checks that pip neither reinstalled nor replaced torch, that it installed only the core
# dependencies (numpy, scipy: no pandas, no tqdm), and that the core works without the extras
# while a missing extra is a clear error. Then the same install into an environment whose torch
# is the declared floor (a metadata-only torch distribution of that version: no other CPU build
# is reachable from here): pip must accept it as it is. About a minute; prints what it checks.
# SMTO_PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${SMTO_PYTHON:-python3}"
torch_pin="$(sed -n 's/^torch==//p' requirements/constraints.txt)"
[ -n "$torch_pin" ] || { echo "ci-install-check: no torch pin in requirements/constraints.txt" >&2; exit 1; }
tmp="$(mktemp -d "${TMPDIR:-/tmp}/smto-install-check.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
say() { echo "ci-install-check: $*"; }
fail() { echo "ci-install-check: FAIL: $*" >&2; exit 1; }

# What a wheel is built from, without this checkout's build leftovers.
mkdir "$tmp/smto"
tar -cf - --exclude='__pycache__' --exclude='*.egg-info' pyproject.toml README.md src \
  | tar -xf - -C "$tmp/smto"

say "fresh venv in $tmp/venv with torch==$torch_pin"
"$python" -m venv "$tmp/venv"
py="$tmp/venv/bin/python"
pip=("$py" -m pip --disable-pip-version-check -q)
"${pip[@]}" install "torch==$torch_pin"
where='import torch; print(torch.__version__, torch.__file__)'
# (-W ignore: torch warns that numpy is missing, which it is until smto brings it)
before="$(cd "$tmp" && "$py" -W ignore -c "$where")"
say "torch before installing smto: $before"

say "pip install smto (no constraints file)"
"${pip[@]}" install --report "$tmp/report.json" "$tmp/smto"
installed="$("$py" -c '
import json, sys
report = json.load(open(sys.argv[1]))
print(" ".join(sorted(item["metadata"]["name"].lower() for item in report["install"])))
' "$tmp/report.json")"
say "pip installed: $installed"

after="$(cd "$tmp" && "$py" -W ignore -c "$where")"
shown="$("$py" -m pip --disable-pip-version-check show torch | sed -n 's/^Version: //p')"
say "torch after installing smto: $after (pip show torch: $shown)"
[ "$before" = "$after" ] || fail "installing smto changed torch: $before -> $after"
[ "${shown%%+*}" = "$torch_pin" ] || fail "pip show torch reports $shown, not $torch_pin"
case " $installed " in
  *" torch "*) fail "pip installed torch again" ;;
esac
for name in $installed; do
  case "$name" in
    smto | numpy | scipy) ;;
    *) fail "pip installed $name, which is not a core dependency (torch, numpy, scipy)" ;;
  esac
done

say "the core works without the extras; a missing extra names it"
(cd "$tmp" && "$py" -c '
import smto
method = smto.create("nash_mtl", n_tasks=2)
print(f"ci-install-check: smto {smto.__version__}: created {type(method).__name__}")
try:
    import smto.report.tables
except ImportError as error:
    assert "pip install '"'smto[bench]'"'" in str(error), error
    print(f"ci-install-check: without pandas: {error}")
else:
    raise AssertionError("smto.report.tables imported without pandas")
')
floor="$(sed -n 's/^ *"torch>=\([0-9.]*\)".*/\1/p' pyproject.toml)"
[ -n "$floor" ] || fail "no torch>=X floor in pyproject.toml"
say "fresh venv in $tmp/floor with a metadata-only torch==$floor (the declared floor)"
"$python" -m venv "$tmp/floor"
fpy="$tmp/floor/bin/python"
site="$("$fpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
dist="$site/torch-$floor.dist-info"
mkdir "$dist"
printf 'Metadata-Version: 2.1\nName: torch\nVersion: %s\n' "$floor" > "$dist/METADATA"
printf 'pip\n' > "$dist/INSTALLER"
printf 'torch-%s.dist-info/METADATA,,\ntorch-%s.dist-info/INSTALLER,,\ntorch-%s.dist-info/RECORD,,\n' \
  "$floor" "$floor" "$floor" > "$dist/RECORD"
"$fpy" -m pip --disable-pip-version-check -q install "$tmp/smto"
kept="$("$fpy" -m pip --disable-pip-version-check show torch | sed -n 's/^Version: //p')"
[ "$kept" = "$floor" ] || fail "installing smto replaced torch $floor with $kept"
say "torch $floor kept"
say "ok"
