#!/usr/bin/env bash
# Prepare a REAL tuner study on the lent `nvidia-h200` machine (no network there). Run HERE, on the
# workstation, from anywhere in the repository; needs python3 with pip, access to PyPI, xz and git.
#
# Writes, into folders ignored through .git/info/exclude (never commit them):
#   .whl-1/ .whl-2/   vLLM 0.26.0 and the small packages it needs there, pruned, xz-packed and split in two
#                     (~39 MiB each; ../shared/vllm-on-h200/prepare.sh builds them; skipped when present)
#   .gpu/             what device.sh needs beside the working tree (~2 MiB):
#                       make_model.py      the random-weight Llama writer (from ../shared/vllm-on-h200/)
#                       wheels/*.whl       tuner (pip wheel --no-deps) and its dependencies that the
#                                          machine's image lacks, as CPython 3.12 manylinux wheels
#
# What the machine's image already has (KINDS.md's package list): aiohttp, numpy, pyyaml, rich, tqdm,
# packaging, markupsafe, typing-extensions, nvidia-ml-py, transformers, tokenizers, matplotlib; pydantic
# 2.14 comes with the vLLM bundle. Missing, carried here: optuna and its alembic, Mako, colorlog, SQLAlchemy
# (2.1: greenlet is optional, only for its asyncio layer). plotly is not carried: tuner imports it only for
# `pareto --plot x.html`; the PNG plot uses matplotlib.
#
# Environment: SHARED (default ../shared/vllm-on-h200), FORCE=1 rebuilds the vLLM bundle.
set -euo pipefail
ROOT=$(git rev-parse --show-toplevel)
cd "$ROOT"
SHARED=${SHARED:-$ROOT/../shared/vllm-on-h200}
EXCL=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCL")"
touch "$EXCL"
for pat in '/.gpu/' '/.whl*/' '/.vllm-build/'; do grep -qxF "$pat" "$EXCL" || echo "$pat" >> "$EXCL"; done

# Versions: those tuner is tested with here (.venv), within optuna 5's requirements.
DEPS=(optuna==5.0.0 alembic==1.20.1 Mako==1.4.3 colorlog==6.12.0 SQLAlchemy==2.1.9)
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312
      --platform manylinux_2_35_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

# 1. the vLLM bundle
if [ "${FORCE:-0}" = 1 ] || [ ! -f .whl-2/site.tar.xz.sha256 ] || [ ! -f .whl-1/site.tar.xz.part-00 ]; then
  bash "$SHARED/prepare.sh"
else
  echo "vLLM bundle present (.whl-1, .whl-2); FORCE=1 rebuilds it"
fi

# 2. .gpu/: make_model.py, tuner's wheel and the missing dependencies
rm -rf .gpu/wheels
mkdir -p .gpu/wheels
cp "$SHARED/make_model.py" .gpu/make_model.py
python3 -m pip download -q --no-deps "${PLAT[@]}" -d .gpu/wheels "${DEPS[@]}"
python3 -m pip wheel -q --no-deps -w .gpu/wheels .
# one version of each package, or the install there stops
dupes=$(ls .gpu/wheels | sed -E 's/-[0-9].*//' | tr 'A-Z_' 'a-z-' | sort | uniq -d)
[ -z "$dupes" ] || { echo "two versions of: $dupes" >&2; exit 1; }
( cd .gpu && find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum > SHA256SUMS )

# 3. sizes: each run carries the working tree + its carry list, at most 64 MiB
mib() { du -sb "$@" | awk '{s += $1} END {printf "%.1f", s / 1048576}'; }
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
tree=$(awk -v b="$tree_bytes" 'BEGIN {printf "%.1f", b / 1048576}')
echo
ls -la .whl-1 .whl-2 .gpu .gpu/wheels
echo
printf '%-28s %8s MiB\n' "working tree (travels)" "$tree" ".whl-1" "$(mib .whl-1)" ".whl-2" "$(mib .whl-2)" ".gpu" "$(mib .gpu)"
for run in "run 1: tree + .whl-1 + .gpu" "run 2: tree + .whl-2 + .gpu" "run 3+: tree + .gpu"; do
  case "$run" in
    "run 1"*) b=$(du -sb .whl-1 .gpu | awk '{s += $1} END {print s}') ;;
    "run 2"*) b=$(du -sb .whl-2 .gpu | awk '{s += $1} END {print s}') ;;
    *) b=$(du -sb .gpu | awk '{s += $1} END {print s}') ;;
  esac
  total=$(awk -v a="$b" -v t="$tree_bytes" 'BEGIN {printf "%.1f", (a + t) / 1048576}')
  printf '%-28s %8s MiB\n' "$run" "$total"
  awk -v a="$b" -v t="$tree_bytes" 'BEGIN {exit !((a + t) > 64 * 1048576)}' && { echo "  over 64 MiB!" >&2; exit 1; }
done
echo "ready: see scripts/h200/README.md for the device runs"
