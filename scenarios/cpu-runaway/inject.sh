# A runaway job in the API's container spins at 100% of the CPU the platform gives the API (half a
# CPU, set here so the machine keeps the rest).
. "$(dirname "$0")/../lib.sh"
docker update --cpus 0.5 "$API" >/dev/null
docker exec -d "$API" bash -c 'exec -a report-job python3 -c "while True: pass"'
