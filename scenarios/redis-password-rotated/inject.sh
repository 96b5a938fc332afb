# Before: the store wants a password and the API uses it. Then a rotation: the new password goes on
# the store and into the API's secret file, but the API, which reads it only at start, is not
# restarted; its connections are dropped, so it must authenticate again, with the old password.
. "$(dirname "$0")/../lib.sh"
docker exec "$STORE" redis-cli config set requirepass s3cret-2026-11 >/dev/null
docker exec "$API" bash -c 'mkdir -p /srv/secrets && printf s3cret-2026-11 > /srv/secrets/redis-password'
docker restart -t 1 "$API" >/dev/null
wait_healthy 90
sleep 2
docker exec "$API" bash -c 'printf s3cret-2026-12 > /srv/secrets/redis-password'
docker exec "$STORE" redis-cli -a s3cret-2026-11 --no-auth-warning config set requirepass s3cret-2026-12 >/dev/null
docker exec "$STORE" redis-cli -a s3cret-2026-12 --no-auth-warning client kill type normal >/dev/null
