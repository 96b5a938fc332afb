. "$(dirname "$0")/../lib.sh"
healthy
used=$(docker exec "$STORE" df --output=pcent /data | tail -n1 | tr -dc 0-9)
[ "$used" -lt 90 ] || { echo "the store's volume is still ${used}% full" >&2; exit 1; }
