#!/bin/sh
# Installs the Debian packages the test suite drives for real (PostgreSQL, Chromium, nginx) when
# they are missing. Needs root (CI runs as root); elsewhere it says what to install and goes on,
# and the tests that need them skip with that reason.
set -u
missing=""
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
# nginx in front of waitress (tests/servers): run by the tests, never as a service.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != "0" ]; then
    echo "system-deps: missing Debian packages:$missing (run as root: apt-get install$missing)" >&2
    exit 0
fi
echo "system-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $missing >/dev/null
