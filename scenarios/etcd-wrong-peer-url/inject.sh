# etcd3 is rebuilt on an empty data volume and rejoined the documented way (member remove, then
# member add with its peer URL), but the settings it restarts with give its own peer URL a wrong
# port in --initial-cluster and --initial-advertise-peer-urls: it cannot join, and etcd exits at
# every start. The other two members keep the quorum.
. "$(dirname "$0")/../lib.sh"
docker exec -i "$ETCD3" sh -c 'cat >> /etc/default/etcd' <<'CONF'
# Rejoining on a new data volume (ticket OPS-2291).
ETCD_INITIAL_CLUSTER_STATE=existing
ETCD_INITIAL_CLUSTER=etcd1=http://etcd1:2380,etcd2=http://etcd2:2380,etcd3=http://etcd3:2390
ETCD_INITIAL_ADVERTISE_PEER_URLS=http://etcd3:2390
CONF
docker stop -t 5 "$ETCD3" >/dev/null
id=$(etcdctl_on "$ETCD1" member list | awk -F', ' '$3 == "etcd3" {print $1}')
[ -n "$id" ] || { echo "etcd3 is not a member" >&2; exit 1; }
# etcd refuses a membership change ("unhealthy cluster") until the members that stay have been
# connected for 5 s: a freshly started cluster, or one that just lost a member, needs a moment.
retry 60 etcdctl_on "$ETCD1" member remove "$id"
# The new, empty data volume.
docker run --rm --network none --volumes-from "$ETCD3" "$(docker inspect -f '{{.Config.Image}}' "$ETCD3")" \
  rm -rf /var/lib/etcd/default
retry 60 etcdctl_on "$ETCD1" member add etcd3 --peer-urls=http://etcd3:2380
docker start "$ETCD3" >/dev/null
