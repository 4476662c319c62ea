#!/usr/bin/env bash
# Benchmark: dunnage against `tar | zstd -3 -T0` and `tar | pigz -6` on the same dataset, in
# one run. Prints throughput (and the ratio to the matching baseline), compression ratio,
# peak RSS of the largest process, and bytes written outside the destination (counted from
# every write syscall with strace, in one extra untimed pass per tool).
#
# With --s3 it also stores to S3 on loopback (s3s-fs, a file-backed S3 server; installed
# with cargo into ~/.cache/dunnage/servers/s3s if missing) and compares that end-to-end run
# with `tar | zstd -3 -T0 > file`.
#
# Usage: bench/run.sh [--scale N] [--reps N] [--s3] [--restore-only]
#   BENCH_DIR  where the dataset and outputs live (default ~/.cache/dunnage/bench)
# The dataset is built once per scale and reused (it is deterministic).
set -euo pipefail

scale=1
reps=3
s3=
restore_only=
while [ $# -gt 0 ]; do
  case "$1" in
    --restore-only) restore_only=1; shift ;;
    --scale) scale=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --s3) s3=1; shift ;;
    *) echo "usage: $0 [--scale N] [--reps N] [--s3] [--restore-only]" >&2; exit 2 ;;
  esac
done

here=$(cd "$(dirname "$0")/.." && pwd)
bench_dir=${BENCH_DIR:-$HOME/.cache/dunnage/bench}
data=$bench_dir/data-x$scale
out=$bench_dir/out
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/dunnage/target}

need=()
command -v pigz >/dev/null || need+=(pigz)
[ -x /usr/bin/time ] || need+=(time)
command -v strace >/dev/null || need+=(strace)
command -v zstd >/dev/null || need+=(zstd)
command -v age >/dev/null || need+=(age)
command -v gpg >/dev/null || need+=(gnupg)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -f "$data/.complete" ]; then
  echo "building dataset (scale $scale) in $data" >&2
  rm -rf "$data"
  python3 "$here/bench/make_dataset.py" "$data" --scale "$scale"
  touch "$data/.complete"
fi
(cd "$here" && cargo build --release --quiet)
bin=$CARGO_TARGET_DIR/release/dunnage

if [ -n "$s3" ]; then
  s3s=$HOME/.cache/dunnage/servers/s3s/bin/s3s-fs
  py=$HOME/.cache/dunnage/servers/py/bin/python
  [ -x "$py" ] || { echo "run scripts/test once first: it installs boto3 into $py" >&2; exit 1; }
  if [ ! -x "$s3s" ]; then
    echo "installing s3s-fs 0.14.1 (a few minutes)" >&2
    cargo install --locked s3s-fs@0.14.1 --features binary --root "$HOME/.cache/dunnage/servers/s3s" >&2
  fi
  s3_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # It serves the folder $out: bucket "bench" is the folder $out/bench, recreated per run.
  mkdir -p "$out"
  "$s3s" --host 127.0.0.1 --port "$s3_port" --access-key bench --secret-key benchsecret "$out" \
    >"$bench_dir/s3s.log" 2>&1 &
  s3s_pid=$!
  trap 'kill $s3s_pid 2>/dev/null || true' EXIT
  sleep 1
fi

data_bytes=$(find "$data" -type f ! -name .complete -printf '%s\n' | awk '{s+=$1} END {printf "%.0f\n", s}')
files=$(find "$data" -type f ! -name .complete | wc -l)
echo "dataset: $data, $files files, $((data_bytes / 1048576)) MiB; $(nproc) cores; best of $reps runs"
# One age key for both the baseline and dunnage.
[ -f "$bench_dir/age-key.txt" ] || age-keygen -o "$bench_dir/age-key.txt" 2>/dev/null
age_key=$(age-keygen -y "$bench_dir/age-key.txt")
# One OpenPGP key (RSA 3072 with its encryption subkey, as gpg makes by default).
export GNUPGHOME=$bench_dir/gnupg
if [ ! -d "$GNUPGHOME" ]; then
  mkdir -m 700 "$GNUPGHOME"
  gpg --batch --pinentry-mode loopback --passphrase '' --quick-gen-key 'bench <bench@example.org>' \
    default default never 2>/dev/null
fi
gpg_ring=$(gpg --armor --export bench@example.org)
# Warm the page cache so every tool reads from memory (GNU tar skips reading for /dev/null).
tar -cf - -C "$data" . | cat > /dev/null

rel=${data#/}
declare -A best_s best_rss outside size

# run NAME OUTFILE COMMAND...: time one run, keep the best elapsed time per tool.
run() {
  local name=$1 file=$2; shift 2
  rm -rf "$out"/* "$out"/.[!.]* 2>/dev/null || true; mkdir -p "$out/bench"
  if [ -n "${trace:-}" ]; then
    # Untimed pass: which files does the tool write, and how much?
    rm -f "$bench_dir"/strace.*
    strace -ff -qq -y -e trace=write,writev,pwrite64,pwritev -o "$bench_dir/strace" \
      "$@" >/dev/null 2>"$bench_dir/stderr.txt"
    outside[$name]=$(python3 "$here/bench/written_outside.py" "$bench_dir/strace" "$out")
    rm -f "$bench_dir"/strace.*
    return
  fi
  /usr/bin/time -f '%e %M' -o "$bench_dir/time.txt" "$@" >/dev/null 2>"$bench_dir/stderr.txt" || {
    cat "$bench_dir/stderr.txt" >&2; echo "$name failed" >&2; exit 1; }
  read -r secs rss_kib < <(tail -n 1 "$bench_dir/time.txt")
  size[$name]=$(stat -c %s "$out/$file")
  if [ -z "${best_s[$name]:-}" ] || awk "BEGIN {exit !($secs < ${best_s[$name]})}"; then
    best_s[$name]=$secs
  fi
  # Peak RSS: keep the worst seen.
  [ "${best_rss[$name]:-0}" -ge "$rss_kib" ] || best_rss[$name]=$rss_kib
}

# dunnage with only the variables given here (nothing leaks in from the caller's shell).
dunnage=(env -i PATH="$PATH" TZ=UTC BACKUP_SOURCES="$data" BACKUP_ARCHIVE="$out")

all_tools() {
  run "tar|zstd -3 -T0" base.tar.zst bash -c "tar -cf - -C / '$rel' | zstd -3 -T0 -q -o '$out/base.tar.zst'"
  run "dunnage zst 3" dunnage.tar.zst "${dunnage[@]}" BACKUP_COMPRESSION=zst \
    BACKUP_COMPRESSION_LEVEL=3 BACKUP_FILENAME=dunnage.tar.zst "$bin" backup
  run "tar|zstd|age" base.tar.zst.age bash -c "tar -cf - -C / '$rel' | zstd -3 -T0 -q -c | \
    age -r '$age_key' > '$out/base.tar.zst.age'"
  run "dunnage zst+age" dunnage.tar.zst.age "${dunnage[@]}" BACKUP_COMPRESSION=zst \
    BACKUP_COMPRESSION_LEVEL=3 BACKUP_FILENAME=dunnage.tar.zst AGE_PUBLIC_KEYS="$age_key" \
    "$bin" backup
  run "tar|zstd|gpg" base.tar.zst.gpg bash -c "tar -cf - -C / '$rel' | zstd -3 -T0 -q -c | \
    gpg --batch --trust-model always -e -r bench@example.org > '$out/base.tar.zst.gpg'"
  run "dunnage zst+gpg" dunnage.tar.zst.gpg "${dunnage[@]}" BACKUP_COMPRESSION=zst \
    BACKUP_COMPRESSION_LEVEL=3 BACKUP_FILENAME=dunnage.tar.zst GPG_PUBLIC_KEY_RING="$gpg_ring" \
    "$bin" backup
  run "tar|pigz -6" base.tar.gz bash -c "tar -cf - -C / '$rel' | pigz -6 > '$out/base.tar.gz'"
  run "dunnage gz 6" dunnage.tar.gz "${dunnage[@]}" BACKUP_COMPRESSION=gz \
    BACKUP_COMPRESSION_LEVEL=6 BACKUP_FILENAME=dunnage.tar.gz "$bin" backup
  if [ -n "$s3" ]; then
    # The same upload with a standard client: tar | zstd | boto3 (multipart, 8 MiB parts,
    # 10 threads), for what this server allows on this machine.
    run "tar|zstd|boto3 S3" bench/boto3.tar.zst bash -c "tar -cf - -C / '$rel' | zstd -3 -T0 -q -c | \
      '$py' '$here/tests/servers/s3_client.py' http://127.0.0.1:$s3_port bench benchsecret put bench boto3.tar.zst -"
    # Only the S3 destination: the local folder does not exist.
    run "dunnage zst 3 S3" bench/s3.tar.zst "${dunnage[@]}" BACKUP_ARCHIVE=/nonexistent \
      BACKUP_COMPRESSION=zst BACKUP_COMPRESSION_LEVEL=3 BACKUP_FILENAME=s3.tar.zst \
      AWS_S3_BUCKET_NAME=bench AWS_ENDPOINT="127.0.0.1:$s3_port" AWS_ENDPOINT_PROTO=http \
      AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchsecret "$bin" backup
  fi
}
if [ -z "$restore_only" ]; then
  for _ in $(seq "$reps"); do all_tools; done
  trace=1 all_tools
fi

# Getting it back: the same archives, made once, restored and read by each tool.
arch=$bench_dir/archives
rm -rf "$arch"; mkdir -p "$arch"
tar -cf - -C / "$rel" | zstd -3 -T0 -q -o "$arch/base.tar.zst"
tar -cf - -C / "$rel" | pigz -6 > "$arch/base.tar.gz"
restore_env=(env -i PATH="$PATH" TZ=UTC BACKUP_SOURCES="$data" BACKUP_ARCHIVE="$arch" \
  BACKUP_STATE_DIR="$bench_dir/state")
"${restore_env[@]}" BACKUP_COMPRESSION=zst BACKUP_FILENAME=dunnage.tar.zst "$bin" backup 2>/dev/null
"${restore_env[@]}" BACKUP_COMPRESSION=gz BACKUP_FILENAME=dunnage.tar.gz "$bin" backup 2>/dev/null
# Restores go to tmpfs when it has room: on this kind of VM disk (ext4 with discard) the time
# to create 20,000 files right after deleting the previous 20,000 varies 5x from run to run
# for every tool alike, which would measure the disk, not the tools.
shm_free=$(df -k --output=avail /dev/shm 2>/dev/null | tail -n 1 || echo 0)
if [ "${shm_free:-0}" -gt $((data_bytes / 1024 * 2)) ]; then
  restored=/dev/shm/dunnage-bench-restored
  restore_fs="tmpfs"
else
  restored=$out/restored
  restore_fs="the disk"
fi

# back NAME COMMAND...: time one restore or read into an empty $restored.
back() {
  local name=$1; shift
  rm -rf "$out"/* "$restored" 2>/dev/null || true; mkdir -p "$restored"
  if [ -n "${trace:-}" ]; then
    rm -f "$bench_dir"/strace.*
    strace -ff -qq -y -e trace=write,writev,pwrite64,pwritev -o "$bench_dir/strace" \
      "$@" >/dev/null 2>"$bench_dir/stderr.txt"
    outside[$name]=$(python3 "$here/bench/written_outside.py" "$bench_dir/strace" "$restored")
    rm -f "$bench_dir"/strace.*
    return
  fi
  sync
  /usr/bin/time -f '%e %M' -o "$bench_dir/time.txt" "$@" >/dev/null 2>"$bench_dir/stderr.txt" || {
    cat "$bench_dir/stderr.txt" >&2; echo "$name failed" >&2; exit 1; }
  read -r secs rss_kib < <(tail -n 1 "$bench_dir/time.txt")
  if [ -z "${best_s[$name]:-}" ] || awk "BEGIN {exit !($secs < ${best_s[$name]})}"; then
    best_s[$name]=$secs
  fi
  [ "${best_rss[$name]:-0}" -ge "$rss_kib" ] || best_rss[$name]=$rss_kib
}

all_back() {
  back "zstd -dc|tar -x" bash -c "zstd -dc '$arch/base.tar.zst' | tar -x -C '$restored'"
  back "dunnage restore zst" "${restore_env[@]}" "$bin" restore dunnage.tar.zst --target "$restored"
  back "gzip -dc|tar -x" bash -c "gzip -dc '$arch/base.tar.gz' | tar -x -C '$restored'"
  back "dunnage restore gz" "${restore_env[@]}" "$bin" restore dunnage.tar.gz --target "$restored"
  back "zstd -dc|tar -t" bash -c "zstd -dc '$arch/base.tar.zst' | tar -t > /dev/null"
  back "dunnage verify read" "${restore_env[@]}" "$bin" verify dunnage.tar.zst --level read
}
for _ in $(seq "$reps"); do all_back; done
trace=1 all_back
rm -rf "$restored"

printf '\n%-18s %9s %10s %8s %9s %16s\n' tool "MiB/s" "vs base" ratio "peak RSS" "written outside"
names=("tar|zstd -3 -T0" "dunnage zst 3" "tar|zstd|age" "dunnage zst+age" "tar|zstd|gpg"
  "dunnage zst+gpg" "tar|pigz -6" "dunnage gz 6")
[ -z "$s3" ] || names+=("tar|zstd|boto3 S3" "dunnage zst 3 S3")
[ -z "$restore_only" ] || names=()
for name in "${names[@]}"; do
  case "$name" in
    *"|age"* | *"+age"*) base="tar|zstd|age" ;;
    *"|gpg"* | *"+gpg"*) base="tar|zstd|gpg" ;;
    *zst*) base="tar|zstd -3 -T0" ;;
    *) base="tar|pigz -6" ;;
  esac
  awk -v n="$name" -v s="${best_s[$name]}" -v bs="${best_s[$base]}" -v d="$data_bytes" \
      -v z="${size[$name]}" -v r="${best_rss[$name]}" -v o="${outside[$name]}" 'BEGIN {
    printf "%-18s %9.1f %9.2fx %8.3f %6.0f MiB %16d\n", n, d / s / 1048576, bs / s, z / d, r / 1024, o }'
done
echo
printf '%-20s %9s %10s %9s %16s\n' "getting it back" "MiB/s" "vs base" "peak RSS" "written outside"
for name in "zstd -dc|tar -x" "dunnage restore zst" "gzip -dc|tar -x" "dunnage restore gz" \
    "zstd -dc|tar -t" "dunnage verify read"; do
  case "$name" in
    *gz*) base="gzip -dc|tar -x" ;;
    *verify* | *"tar -t"*) base="zstd -dc|tar -t" ;;
    *) base="zstd -dc|tar -x" ;;
  esac
  awk -v n="$name" -v s="${best_s[$name]}" -v bs="${best_s[$base]}" -v d="$data_bytes" \
      -v r="${best_rss[$name]}" -v o="${outside[$name]}" 'BEGIN {
    printf "%-20s %9.1f %9.2fx %6.0f MiB %16d\n", n, d / s / 1048576, bs / s, r / 1024, o }'
done
echo
echo "MiB/s: dataset bytes / best wall time. vs base: throughput relative to the baseline with"
echo "the same codec. ratio: archive / dataset. peak RSS: largest single process (worst run)."
echo "written outside: bytes the tool wrote to files other than its archive, its stderr and"
echo "pipes, counted from every write syscall (strace) in an extra untimed run."
echo "dunnage fsyncs its archive before renaming it into place; the baselines do not sync."
echo "getting it back: into an empty folder on $restore_fs, from archives made once; written"
echo "outside: bytes written to files other than the restored tree (no temporary copies)."
echo "zst+gpg: dunnage writes the keyring case ASCII-armored (as the reference), gpg binary."
[ -z "$s3" ] || echo "S3 rows: to s3s-fs on 127.0.0.1 (multipart), compared with tar|zstd > file. The server"
[ -z "$s3" ] || echo "shares the 2 cores and hashes every byte (MD5 per part and again per object)."
