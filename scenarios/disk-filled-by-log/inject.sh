# A debug logger is left running in the store's container: it appends about 2 MB a second to a log on
# the data volume until the volume is full, and keeps trying.
. "$(dirname "$0")/../lib.sh"
docker exec -i "$STORE" bash -c 'cat > /usr/local/bin/debug-logger && chmod +x /usr/local/bin/debug-logger' <<'EOF'
#!/bin/bash
# Writes debug lines to the data volume, forever.
while :; do
  head -c 2000000 /dev/zero | tr '\0' 'x'
  echo
  sleep 1
done >> /data/debug.log 2>/dev/null
EOF
docker exec -d "$STORE" /usr/local/bin/debug-logger
# Writes make the store try snapshots, which fail once the volume is full.
for _ in $(seq 30); do
  probe curl -sS --max-time 5 -o /dev/null -X POST http://web:8080/api/visits || true
  [ "$(store_usage)" -lt 95 ] || break
  sleep 1
done
