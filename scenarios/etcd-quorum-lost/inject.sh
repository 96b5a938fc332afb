# Two of the three etcd members are stopped: the last one cannot make a quorum, so it serves
# neither writes nor linearizable reads, and the key-value service fails every request.
. "$(dirname "$0")/../lib.sh"
docker stop -t 5 "$ETCD2" "$ETCD3" >/dev/null
