# The store's link is throttled to a trickle by a traffic-control qdisc on its interface, set from a
# throwaway container in its network namespace (the store's image has no tc). The kernel has no netem,
# so an htb rate limit of 160 bit/s (seconds per packet) and a short queue give the delay and the loss.
. "$(dirname "$0")/../lib.sh"
docker run --rm --network "container:$STORE" --cap-add NET_ADMIN "$SANDBOX_IMAGE" bash -c '
  tc qdisc add dev eth0 root handle 1: htb default 10 &&
  tc class add dev eth0 parent 1: classid 1:10 htb rate 160bit ceil 160bit burst 100 cburst 100 &&
  tc qdisc add dev eth0 parent 1:10 handle 10: pfifo limit 3' >/dev/null
