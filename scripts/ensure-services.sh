#!/usr/bin/env bash
# Make sure the services the test suite talks to are up: PostgreSQL, MariaDB and Redis
# (RabbitMQ is not needed yet), and that Debian's chromium is installed (the dashboard's
# browser test drives it through Playwright). Starts the services where they are installed
# but down and installs chromium where it is missing; fails loudly otherwise, because a
# skipped integration test is a failed one.
set -u

wait_for() {  # wait_for NAME CHECK-COMMAND...
  local name=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then echo "ok: $name is up"; return 0; fi
    sleep 0.5
  done
  echo "error: $name did not come up" >&2
  return 1
}

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG; }
mariadb_up() { mariadb-admin --protocol=tcp -h 127.0.0.1 -P 3306 -u root ping >/dev/null 2>&1; }

status=0
if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  wait_for PostgreSQL pg_up || status=1
else
  echo "ok: PostgreSQL is up"
fi
if ! mariadb_up; then
  if [ -x /usr/sbin/mariadbd ] && command -v start-stop-daemon >/dev/null 2>&1; then
    echo "starting MariaDB"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  fi
  wait_for MariaDB mariadb_up || status=1
else
  echo "ok: MariaDB is up"
fi
if ! redis_up; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  fi
  wait_for Redis redis_up || status=1
else
  echo "ok: Redis is up"
fi
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (Debian's package) for the browser test"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
      >/tmp/chordload-chromium-install.log 2>&1 \
      || { echo "error: apt-get install chromium failed (/tmp/chordload-chromium-install.log)" >&2; status=1; }
  fi
  if [ -x /usr/bin/chromium ]; then echo "ok: chromium installed"; else
    echo "error: /usr/bin/chromium is missing (apt-get install chromium)" >&2; status=1; fi
else
  echo "ok: chromium is installed"
fi
exit $status
