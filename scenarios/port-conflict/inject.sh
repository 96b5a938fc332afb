# A settings change gives the API's metrics listener port 8000, the API's own; it applies at the next
# restart, which comes: the metrics listener takes the port and the API's bind fails.
. "$(dirname "$0")/../lib.sh"
docker exec "$API" sed -i 's/^METRICS_PORT=.*/METRICS_PORT=8000/' /srv/api.env
docker restart -t 1 "$API" >/dev/null
