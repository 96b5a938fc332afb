. "$(dirname "$0")/../lib.sh"
etcd_healthy
