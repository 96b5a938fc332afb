# Sourced by each case's inject.sh and check.sh. The runner sets:
#   WEB API STORE   the demo's container names      NETWORK  its network    VOLUME  its data volume
#   ETCD1 ETCD2 ETCD3 KV   the etcd demo's members and its kv service (cases with `stack: etcd`)
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

# etcd_healthy: the etcd demo is whole: its three members and the kv service run; each member
# answers a quorum read and has room on its data volume; they agree on one leader; the cluster
# lists three started members; and a value written through the kv service reads back.
etcd_healthy() {
  local name state used
  for name in "$ETCD1" "$ETCD2" "$ETCD3" "$KV"; do
    state=$(docker inspect -f '{{.State.Status}}' "$name")
    [ "$state" = running ] || { echo "$name is $state" >&2; return 1; }
  done
  for name in "$ETCD1" "$ETCD2" "$ETCD3"; do
    used=$(docker exec "$name" df --output=pcent /var/lib/etcd | tail -n1 | tr -dc 0-9)
    [ "$used" -lt 90 ] || { echo "the data volume of $name is ${used}% full" >&2; return 1; }
  done
  probe bash -c '
    set -e
    leaders=""
    for member in etcd1 etcd2 etcd3; do
      health=$(curl -sS --max-time 5 "http://$member:2379/health" | jq -r .health || true)
      [ "$health" = true ] || { echo "$member is not healthy (health: ${health:-no answer})" >&2; exit 1; }
      leader=$(curl -fsS --max-time 5 -X POST -d "{}" "http://$member:2379/v3/maintenance/status" | jq -r .leader)
      leaders="$leaders $leader"
    done
    distinct=$(printf "%s\n" $leaders | sort -u | wc -l)
    [ "$distinct" = 1 ] || { echo "the members name different leaders:$leaders" >&2; exit 1; }
    started=$(curl -fsS --max-time 5 -X POST -d "{}" http://etcd1:2379/v3/cluster/member/list \
      | jq "[.members[] | select((.name // \"\") != \"\")] | length")
    [ "$started" = 3 ] || { echo "the cluster lists $started started members, not 3" >&2; exit 1; }
    key="oracle-$RANDOM$RANDOM"
    curl -fsS --max-time 20 -X PUT --data-binary "$key" "http://kv:8000/api/keys/$key" >/dev/null
    value=$(curl -fsS --max-time 20 "http://kv:8000/api/keys/$key" | jq -r .value)
    [ "$value" = "$key" ] || { echo "wrote $key through kv, read back ${value:-nothing}" >&2; exit 1; }'
}

# retry SECONDS COMMAND...: runs COMMAND until it succeeds, quietly, for up to SECONDS; the last
# attempt's output shows when it never does.
retry() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { "$@"; return; }
    sleep 1
  done
}

# etcdctl_on MEMBER ARGS...: etcdctl in a running member, against the cluster's three endpoints.
etcdctl_on() {
  local member=$1
  shift
  docker exec "$member" etcdctl --endpoints=http://etcd1:2379,http://etcd2:2379,http://etcd3:2379 "$@"
}
