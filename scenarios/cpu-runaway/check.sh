. "$(dirname "$0")/../lib.sh"
healthy
# No process beside the API's own has burnt CPU for more than a few seconds (health checks are brief;
# ps's %CPU is over a process's life, so a busy loop shows even when the machine is busy).
busy=$(docker top "$API" -eo pid,pcpu,etimes,args | awk 'NR > 1 && $2 > 5 && $3 > 5 && $0 !~ /\/srv\/api.py/')
[ -z "$busy" ] || { echo "busy processes in the API: $busy" >&2; exit 1; }
