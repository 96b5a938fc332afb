. "$(dirname "$0")/../lib.sh"
healthy
nano=$(docker inspect -f '{{.HostConfig.NanoCpus}}' "$API")
[ "$nano" -eq 0 ] || [ "$nano" -ge 250000000 ] || { echo "the API's CPU limit is still $nano nano-CPUs" >&2; exit 1; }
