. "$(dirname "$0")/../lib.sh"
healthy
used=$(store_usage)
[ "$used" -lt 90 ] || { echo "the store's volume is ${used}% full" >&2; exit 1; }
