#!/usr/bin/env bash
# Throughput of one `dunnage backup` of the benchmark dataset into each network destination
# alone, on loopback, against the test servers. Run it under the servers:
#
#   scripts/with-servers bench/destinations.sh [--scale N] [--codec none|zst]
#
# Prints, per destination: archive MiB, wall seconds, MiB/s of archive bytes stored, peak
# RSS of dunnage. The servers share this machine's cores with dunnage: the numbers say what
# each server takes on this machine, not what the destination code could do.
set -euo pipefail
scale=1
codec=zst
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) scale=$2; shift 2 ;;
    --codec) codec=$2; shift 2 ;;
    *) echo "usage: $0 [--scale N] [--codec none|zst]" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")/.." && pwd)
bench_dir=${BENCH_DIR:-$HOME/.cache/dunnage/bench}
data=$bench_dir/data-x$scale
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/dunnage/target}
[ -n "${DUNNAGE_TEST_S3_ENDPOINT:-}" ] || { echo "run under scripts/with-servers" >&2; exit 2; }
if [ ! -f "$data/.complete" ]; then
  python3 "$here/bench/make_dataset.py" "$data" --scale "$scale"
  touch "$data/.complete"
fi
(cd "$here" && cargo build --release --quiet)
bin=$CARGO_TARGET_DIR/release/dunnage
py=$DUNNAGE_TEST_PYTHON
tar -cf - -C "$data" . | cat > /dev/null   # warm the page cache
work=$(mktemp -d)
chmod 755 "$work"
trap 'kill ${fake_pid:-} ${gdrive_pid:-} 2>/dev/null || true; rm -rf "$work"' EXIT

"$py" "$here/tests/servers/s3_client.py" "http://$DUNNAGE_TEST_S3_ENDPOINT" \
  "$DUNNAGE_TEST_S3_KEY" "$DUNNAGE_TEST_S3_SECRET" make-bucket bench >/dev/null
azure_conn="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=$DUNNAGE_TEST_AZURE_ENDPOINT;"
"$py" "$here/tests/servers/azurite_client.py" "$azure_conn" make-container bench >/dev/null
fake_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 "$here/tests/servers/dropbox_fake.py" "$fake_port" "$work/dropbox" &
fake_pid=$!
gdrive_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$py" "$here/tests/servers/gdrive_fake.py" "$gdrive_port" "$work/gdrive" &
gdrive_pid=$!
sleep 2
curl -sf "http://127.0.0.1:$gdrive_port/_fake/credentials" > "$work/gdrive-key.json"

common=(env -i PATH="$PATH" TZ=UTC RUST_LOG=info BACKUP_SOURCES="$data"
        BACKUP_ARCHIVE=/nonexistent BACKUP_COMPRESSION="$codec" BACKUP_STATE_DIR="$work/state")
[ "$codec" = none ] || common+=(BACKUP_COMPRESSION_LEVEL=3)
declare -A dest
dest[S3 (moto)]="AWS_S3_BUCKET_NAME=bench AWS_ENDPOINT=$DUNNAGE_TEST_S3_ENDPOINT AWS_ENDPOINT_PROTO=http AWS_ACCESS_KEY_ID=$DUNNAGE_TEST_S3_KEY AWS_SECRET_ACCESS_KEY=$DUNNAGE_TEST_S3_SECRET"
dest[Azure (Azurite)]="AZURE_STORAGE_CONNECTION_STRING=$azure_conn AZURE_STORAGE_CONTAINER_NAME=bench"
dest[WebDAV (WsgiDAV)]="WEBDAV_URL=$DUNNAGE_TEST_WSGIDAV_URL WEBDAV_PATH=bench WEBDAV_USERNAME=$DUNNAGE_TEST_DAV_USER"
dest[WebDAV (Apache)]="WEBDAV_URL=$DUNNAGE_TEST_APACHE_URL WEBDAV_PATH=bench WEBDAV_USERNAME=$DUNNAGE_TEST_DAV_USER"
dest[SFTP (sshd)]="SSH_HOST_NAME=127.0.0.1 SSH_PORT=$DUNNAGE_TEST_SSH_PORT SSH_USER=$DUNNAGE_TEST_SSH_USER SSH_IDENTITY_FILE= SSH_REMOTE_PATH=$DUNNAGE_TEST_SSH_ROOT/bench SSH_HOST_KEY_FINGERPRINT=$DUNNAGE_TEST_SSH_FINGERPRINT"
dest[Google Drive (fake)]="GOOGLE_DRIVE_CREDENTIALS_JSON_FILE=$work/gdrive-key.json GOOGLE_DRIVE_FOLDER_ID=backups GOOGLE_DRIVE_ENDPOINT=http://127.0.0.1:$gdrive_port/drive/v3/"
dest[Dropbox (fake)]="DROPBOX_APP_KEY=fake-app-key DROPBOX_APP_SECRET=fake-app-secret DROPBOX_REFRESH_TOKEN=fake-refresh-token DROPBOX_REMOTE_PATH=/bench DROPBOX_ENDPOINT=http://127.0.0.1:$fake_port/ DROPBOX_OAUTH2_ENDPOINT=http://127.0.0.1:$fake_port/"

echo "dataset: $data; codec $codec; $(nproc) cores"
printf '%-20s %10s %8s %8s %9s\n' destination "archive" seconds "MiB/s" "peak RSS"
for name in "S3 (moto)" "Azure (Azurite)" "WebDAV (WsgiDAV)" "WebDAV (Apache)" "SFTP (sshd)" "Dropbox (fake)" "Google Drive (fake)"; do
  # Split on spaces: no setting contains one (passwords, which do, are added below).
  settings=()
  read -r -a settings <<<"${dest[$name]}"
  extra=()
  case "$name" in WebDAV*) extra=(WEBDAV_PASSWORD="$DUNNAGE_TEST_DAV_PASSWORD") ;; SFTP*) extra=(SSH_PASSWORD="$DUNNAGE_TEST_SSH_PASSWORD") ;; esac
  /usr/bin/time -f '%e %M' -o "$work/time" "${common[@]}" "${settings[@]}" "${extra[@]}" \
    BACKUP_FILENAME="bench-$RANDOM.tar" "$bin" backup 2>"$work/err" || {
      echo "$name: failed"; tail -n 5 "$work/err"; continue; }
  read -r secs rss < <(tail -n 1 "$work/time")
  # The run's summary line: "...; archive 531.2 MiB (ratio 1.87); S3: ...".
  bytes=$(grep -oE 'archive [0-9.]+ (B|KiB|MiB|GiB) \(ratio' "$work/err" | head -1 |
    awk '{ m = ($3 == "GiB") ? 2^30 : ($3 == "MiB") ? 2^20 : ($3 == "KiB") ? 2^10 : 1; printf "%.0f", $2 * m }' || true)
  [ -n "$bytes" ] || bytes=0
  awk -v n="$name" -v b="$bytes" -v s="$secs" -v r="$rss" \
    'BEGIN { printf "%-20s %7.0f MiB %8.2f %8.1f %6.0f MiB\n", n, b/1048576, s, b/1048576/s, r/1024 }'
done
