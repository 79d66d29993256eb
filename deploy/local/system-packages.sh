#!/usr/bin/env bash
# Debian packages the local system and the test suite need beyond Python:
# Java 17 and Maven (the local Kafka broker), PostgreSQL (the review database in
# production-like tests), Chromium (the analysts' page in a real browser) and
# Prometheus with promtool (scraping the live system, checking the alert rules).
# Installs only what is missing; needs root (or sudo) on Debian/Ubuntu.
#
#   system-packages.sh run    what `make run` needs: Java and Maven
#   system-packages.sh test   everything (the default)
set -euo pipefail
profile="${1:-test}"
case "$profile" in
  run | test) ;;
  *) echo "usage: $0 [run|test]" >&2; exit 2 ;;
esac

missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if [ "$profile" = "test" ]; then
  { command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } \
    || missing+=(postgresql)
  { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; } \
    || missing+=(chromium)
  { command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } \
    || missing+=(prometheus)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "installing system packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "fraudstream needs these Debian packages: ${missing[*]} (run as root or install them)" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian starts a Prometheus service on :9090 where it can; the project runs its own.
if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v service >/dev/null 2>&1; then
  $SUDO service prometheus stop >/dev/null 2>&1 || true
fi
