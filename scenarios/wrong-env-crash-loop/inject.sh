# A deployment sets the API's REDIS_HOST to a name that does not exist: the API exits at start, and
# its restart policy makes that a crash loop.
. "$(dirname "$0")/../lib.sh"
OPSLAB_DEMO_REDIS_HOST=cache $COMPOSE up -d --no-deps api >/dev/null 2>&1
