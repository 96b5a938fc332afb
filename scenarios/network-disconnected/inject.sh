# The data store is disconnected from the demo's network: it runs, but nothing can reach it.
. "$(dirname "$0")/../lib.sh"
docker network disconnect "$NETWORK" "$STORE"
