#!/bin/sh
# Runs this etcd member as a service manager on its host would: the settings of /etc/default/etcd
# (ETCD_* variables, as Debian's unit reads them: a later definition wins over an earlier one),
# and etcd started again 5 s after it exits. The container is the member's host: it stays up
# while etcd fails, and stopping it stops the member.
set -u
: "${ETCD_NAME:?ETCD_NAME names this member (etcd1, etcd2 or etcd3)}"
pid=
stop() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid"
  exit 0
}
trap stop TERM INT
while true; do
  (set -a && . /etc/default/etcd && set +a && exec etcd) &
  pid=$!
  wait "$pid"
  status=$?
  pid=
  echo "etcd-member: etcd exited with status $status; starting it again in 5 s" >&2
  sleep 5 &
  wait $!
done
