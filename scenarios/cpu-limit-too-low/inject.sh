# The API's CPU limit is lowered to a hundredth of a CPU.
. "$(dirname "$0")/../lib.sh"
docker update --cpus 0.01 "$API" >/dev/null
