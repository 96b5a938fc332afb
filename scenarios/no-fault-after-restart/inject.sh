# A maintenance restart of the store, over by the time the ticket is filed.
. "$(dirname "$0")/../lib.sh"
docker restart -t 1 "$STORE" >/dev/null
wait_healthy 90
