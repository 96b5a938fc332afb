# A config change with a typo reaches the web front, and its restart applies it: nginx refuses the
# file and exits at every start.
. "$(dirname "$0")/../lib.sh"
docker exec "$WEB" sed -i 's/proxy_pass \$api;/proxy_pas $api;/' /etc/nginx/nginx.conf
docker restart -t 1 "$WEB" >/dev/null
