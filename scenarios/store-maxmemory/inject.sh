# The store holds a few MB of sessions; then its maxmemory is set to 1 MB with the noeviction policy,
# so it refuses every write.
. "$(dirname "$0")/../lib.sh"
docker exec "$STORE" redis-cli eval "for i=1,3000 do redis.call('set','session:'..i,string.rep('x',1000)) end" 0 >/dev/null
docker exec "$STORE" redis-cli config set maxmemory-policy noeviction >/dev/null
docker exec "$STORE" redis-cli config set maxmemory 1mb >/dev/null
