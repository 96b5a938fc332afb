# The API's memory limit is lowered below what it needs: it is OOM-killed at every start.
. "$(dirname "$0")/../lib.sh"
# A running container's limit cannot go below its usage, so the change is made while it is stopped.
docker stop -t 1 "$API" >/dev/null
docker update --memory 24m --memory-swap 24m "$API" >/dev/null
docker start "$API" >/dev/null
