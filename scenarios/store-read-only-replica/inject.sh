# The store is made a replica of a server that does not exist, as a mistaken REPLICAOF would: it
# refuses writes, and reads still work.
. "$(dirname "$0")/../lib.sh"
docker exec "$STORE" redis-cli replicaof 192.0.2.1 6379 >/dev/null
