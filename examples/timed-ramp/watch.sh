#!/bin/sh
# Watch the timed ramp: every second, N new users (no cookie) and N
# returning users (each with its own cookie jar, jars/r-<i>) ask which
# version serves them. Prints the time relative to the ramp's "start" in
# envoy.yaml (read before the sample's requests) and how many of each group
# canary-v2 served. Stops after a sample that began 2 seconds after the
# ramp's end (start + duration), however long each sample takes.
#
#   ./watch.sh             # 30 + 30 users a second
#   ./watch.sh 100         # 100 + 100 users a second
#
# ENVOY (default localhost:10000) is where Envoy listens.
set -eu
n=${1:-30}
envoy=${ENVOY:-localhost:10000}
start=$(sed -n '/"ramp"/s/.*"start": *\([0-9][0-9]*\).*/\1/p' envoy.yaml | head -n 1)
duration=$(sed -n '/"ramp"/s/.*"duration": *\([0-9][0-9]*\).*/\1/p' envoy.yaml | head -n 1)
[ -n "$start" ] && [ -n "$duration" ] || { echo "no ramp start/duration in envoy.yaml" >&2; exit 1; }
mkdir -p jars
while :; do
  t=$(( $(date +%s) - start ))
  new=$(seq "$n" | xargs -P 8 -I{} curl -s "http://$envoy/" | grep -c '^Name: canary-v2' || true)
  back=$(seq "$n" | xargs -P 8 -I{} curl -s -c jars/r-{} -b jars/r-{} "http://$envoy/" | grep -c '^Name: canary-v2' || true)
  printf 'start%+3ds: canary-v2 serves %2d of %d new users, %2d of %d returning users\n' "$t" "$new" "$n" "$back" "$n"
  [ "$t" -lt "$(( duration + 2 ))" ] || break
  # Next sample at the next whole second.
  while [ "$(( $(date +%s) - start ))" -eq "$t" ]; do sleep 0.1; done
done
