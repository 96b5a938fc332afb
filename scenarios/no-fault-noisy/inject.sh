# Healthy, but noisy: a warning a second in the API's log about an optional metrics push that fails.
. "$(dirname "$0")/../lib.sh"
docker exec -d "$API" bash -c 'while :; do echo "warning: metrics push to collector.internal:9091 failed (optional; retrying)" > /proc/1/fd/2; sleep 1; done'
