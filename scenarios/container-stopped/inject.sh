# The data store's container is stopped, as a mistaken `docker stop` or a host clean-up would.
. "$(dirname "$0")/../lib.sh"
docker stop -t 1 "$STORE" >/dev/null
