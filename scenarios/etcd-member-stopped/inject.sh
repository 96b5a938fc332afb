# One of the three etcd members is stopped, as a host clean-up or a mistaken `docker stop` would:
# the other two keep the quorum, so the service still works, one failure away from an outage.
. "$(dirname "$0")/../lib.sh"
docker stop -t 5 "$ETCD2" >/dev/null
