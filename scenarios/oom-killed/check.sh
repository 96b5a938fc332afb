. "$(dirname "$0")/../lib.sh"
healthy
limit=$(docker inspect -f '{{.HostConfig.Memory}}' "$API")
[ "$limit" -eq 0 ] || [ "$limit" -ge $((64 * 1024 * 1024)) ] ||
  { echo "the API's memory limit is still $limit bytes" >&2; exit 1; }
