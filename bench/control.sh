#!/usr/bin/env bash
# The control plane under load: many profiles due at once with DUNNAGE_CONCURRENCY 1 and 4,
# and a backup's throughput with and without 50 API clients polling it. See bench/control.py.
#
# Usage: bench/control.sh [--profiles N] [--concurrency N] [--clients N] [--reps N]
#                         [--skip-profiles] [--skip-clients]
#   BENCH_DIR  where the dataset and work folders live (default ~/.cache/dunnage/bench)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bench_dir=${BENCH_DIR:-$HOME/.cache/dunnage/bench}
data=$bench_dir/data-x1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/dunnage/target}
if [ ! -f "$data/.complete" ]; then
  echo "building dataset (scale 1) in $data" >&2
  rm -rf "$data"
  python3 "$here/bench/make_dataset.py" "$data" --scale 1
  touch "$data/.complete"
fi
(cd "$here" && cargo build --release --quiet)
echo "$(nproc) cores; dunnage $(git -C "$here" rev-parse --short HEAD)"
python3 "$here/bench/control.py" "$CARGO_TARGET_DIR/release/dunnage" \
  --work "$bench_dir/control" --dataset "$data" "$@"
