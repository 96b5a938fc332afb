. "$(dirname "$0")/../lib.sh"
healthy
cpu=$(docker stats --no-stream --format '{{.CPUPerc}}' "$API" | tr -d '%')
awk -v cpu="$cpu" 'BEGIN { exit !(cpu < 10) }' || { echo "the API uses ${cpu}% CPU" >&2; exit 1; }
