# A merge appends a second REDIS_PORT (the staging store's port) to the API's settings file; a later
# definition wins, so the API looks for its store on 6380 from its next start, which the restart brings.
. "$(dirname "$0")/../lib.sh"
docker exec "$API" bash -c 'printf "\n# merged from staging\nREDIS_PORT=6380\n" >> /srv/api.env'
docker restart -t 1 "$API" >/dev/null
