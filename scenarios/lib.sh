# Sourced by each case's inject.sh and check.sh. The runner sets:
#   WEB API STORE   the demo's container names      NETWORK  its network    VOLUME  its data volume
#   COMPOSE         the compose command, with -f and -p for this case's stack
#   SANDBOX_IMAGE   an image with curl, to probe the demo from inside its network
set -euo pipefail

# probe CMD...: runs CMD in a throwaway container on the demo's network.
probe() {
  docker run --rm --network "$NETWORK" "$SANDBOX_IMAGE" "$@"
}

# healthy: every service runs and passes its health check, and a visit goes through the web front,
# the API and the store and is counted.
healthy() {
  local name state
  for name in "$WEB" "$API" "$STORE"; do
    state=$(docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$name")
    [ "$state" = running/healthy ] || { echo "$name is $state" >&2; return 1; }
  done
  probe bash -c '
    set -e
    first=$(curl -fsS --max-time 5 -X POST http://web:8080/api/visits | jq -e .visits)
    second=$(curl -fsS --max-time 5 -X POST http://web:8080/api/visits | jq -e .visits)
    [ "$second" -gt "$first" ] || { echo "visits did not count: $first then $second" >&2; exit 1; }
    curl -fsS --max-time 5 -o /dev/null http://web:8080/'
}

# wait_healthy [SECONDS]: polls `healthy` until it passes (a restarted service needs a moment).
wait_healthy() {
  local deadline=$((SECONDS + ${1:-90}))
  until healthy 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || { healthy; return 1; }
    sleep 1
  done
}

# store_usage: how full the data store's volume is, in percent.
store_usage() {
  docker exec "$STORE" df --output=pcent /data | tail -n1 | tr -dc 0-9
}
