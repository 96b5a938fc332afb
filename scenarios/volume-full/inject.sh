# A large file fills the data store's volume: its snapshots fail, and it then refuses writes.
. "$(dirname "$0")/../lib.sh"
docker exec "$STORE" dd if=/dev/zero of=/data/import-2026-11.tmp bs=1M count=64 >/dev/null 2>&1 || true
# A write makes the store try a snapshot, which fails on the full disk.
probe curl -sS --max-time 5 -o /dev/null -X POST http://web:8080/api/visits || true
