# The store is attached to the network again without its service alias (as a hand-made network change
# would): its container name still resolves, the name the API uses does not.
. "$(dirname "$0")/../lib.sh"
docker network disconnect "$NETWORK" "$STORE"
docker network connect "$NETWORK" "$STORE"
# Connections made before keep working (the address is the same); the API's next ones need the name.
docker exec "$STORE" redis-cli client kill type normal >/dev/null
