. "$(dirname "$0")/../lib.sh"
healthy
# Once the API has a password, removing it from the store is no fix: the store must still want one.
if docker exec "$API" test -s /srv/secrets/redis-password; then
  docker exec "$STORE" redis-cli ping 2>&1 | grep -q NOAUTH ||
    { echo "the store no longer asks for a password" >&2; exit 1; }
fi
