# A backup saved into etcd2's data volume fills it: etcd2's next snapshot fails with "no space
# left on device" and etcd exits, and again at every start while the volume stays full. The
# other two keep the quorum.
. "$(dirname "$0")/../lib.sh"
docker exec "$ETCD2" dd if=/dev/zero of=/var/lib/etcd/backup-2026-11.db bs=1M >/dev/null 2>&1 || true
# Writes through the service make the members snapshot (every 50 writes).
probe bash -c 'for i in $(seq 1 60); do
  curl -sS -o /dev/null --max-time 5 -X PUT --data-binary v "http://kv:8000/api/keys/load-$i" || true
done'
