#!/usr/bin/env bash
# Installs the Debian packages that the integration tests need, when missing and when we can (root + apt):
#   postgresql-15  initdb/pg_ctl for the PostgreSQL-backed Prefect server test (/usr/lib/postgresql/15/bin)
#   chromium       the headless browser of the Prefect UI test (driven by the playwright Python package)
#   util-linux     runuser (PostgreSQL refuses to run as root)
# Idempotent: exits at once when everything is present. Exits 1 with one line when something is missing
# and cannot be installed (not root, no apt-get, or apt failed); `make test` then goes on and the tests
# that need it skip with their reason.
set -euo pipefail
need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)
command -v runuser >/dev/null 2>&1 || need+=(util-linux)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install_system_deps: missing ${need[*]}; cannot install them here (needs root and apt-get)" >&2
  exit 1
fi
echo "install_system_deps: installing ${need[*]} (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq || ! apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; then
  echo "install_system_deps: apt-get could not install ${need[*]}" >&2
  exit 1
fi
