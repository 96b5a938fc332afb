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
