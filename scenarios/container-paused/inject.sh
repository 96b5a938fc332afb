# The data store's container is paused (frozen): it runs, but answers nothing.
. "$(dirname "$0")/../lib.sh"
docker pause "$STORE" >/dev/null
