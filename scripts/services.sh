#!/usr/bin/env bash
# Makes sure the services the tests need answer: MariaDB on 127.0.0.1:3306 and
# Redis on 127.0.0.1:6379 (or CHAT_TEST_MYSQL_URL / CHAT_TEST_REDIS_URL).  Starts
# a stopped one when it can; fails loudly when one cannot be had, so that no
# test is skipped for want of it.  The cluster and fault tests start their own
# private redis-server, mariadbd and nginx and only need the binaries.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 0.5; done
    return 1
}

if ! port_open 3306; then
    echo "services: starting MariaDB"
    if command -v service >/dev/null && service mariadb start >/dev/null 2>&1; then :
    else
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    fi
    wait_port 3306 || { echo "services: MariaDB is not reachable on 127.0.0.1:3306" >&2; exit 1; }
fi

# A fresh Debian MariaDB lets root in over the Unix socket only; the tests
# log in as root with an empty password over TCP (CHAT_TEST_MYSQL_URL).
if [ -z "${CHAT_TEST_MYSQL_URL:-}" ] && command -v mariadb >/dev/null \
    && ! mariadb --protocol=TCP -h 127.0.0.1 -P 3306 -u root -e 'SELECT 1' >/dev/null 2>&1; then
    echo "services: letting root log in to MariaDB over TCP with an empty password (tests only)"
    mariadb -u root -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR \
        mysql_native_password USING PASSWORD('')" \
        || { echo "services: cannot log in to MariaDB as root" >&2; exit 1; }
fi

if ! port_open 6379; then
    echo "services: starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir "${TMPDIR:-/tmp}"
    wait_port 6379 || { echo "services: Redis is not reachable on 127.0.0.1:6379" >&2; exit 1; }
fi

for bin in redis-server mariadbd mariadb-install-db nginx; do
    command -v "$bin" >/dev/null || [ -x "/usr/sbin/$bin" ] \
        || { echo "services: $bin is not installed" >&2; exit 1; }
done
echo "services: MariaDB and Redis are up"
