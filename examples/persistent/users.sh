#!/bin/sh
# Simulate N users, each with its own cookie jar (jars/<prefix>-<i>): one
# request each, 8 at a time. Prints "<user> <version> <pod>", sorted by user.
#
#   ./users.sh 200 > w10.txt          # 200 users (jars kept for next time)
#   ./users.sh 200 newcomer           # 200 other users (new jars)
#
# ENVOY (default localhost:10000) is where Envoy listens.
set -eu
n=${1:-200}
prefix=${2:-user}
mkdir -p jars
seq -w "$n" | xargs -P 8 -I{} sh -c '
  out=$(curl -s -c "jars/$1-$2" -b "jars/$1-$2" "http://$0/" | tr -d "\r")
  printf "%s-%s %s %s\n" "$1" "$2" \
    "$(printf "%s\n" "$out" | sed -n "s/^Name: //p")" \
    "$(printf "%s\n" "$out" | sed -n "s/^Hostname: //p")"
' "${ENVOY:-localhost:10000}" "$prefix" {} | LC_ALL=C sort
