"""Serves fakesnow (Snowflake's REST protocol on DuckDB) the way the `snowflake-api` crate
expects it, for floe's tests and benchmarks.

    python fakesnow_server.py --port P --certfile leaf.pem --keyfile leaf.key --db-path DIR

- fakesnow omits response fields the crate requires (login: sessionId, masterToken,
  validity, roleName; queries: returned, finalRoleName, version; errors: age, queryId,
  internalError, sqlState); an ASGI wrapper fills them in.
- fakesnow records an empty table comment in a second DuckDB database, which fails inside an
  explicit transaction; that write is skipped when there is nothing to record.
- fakesnow's bookkeeping of text lengths and its status messages put identifiers into SQL
  literals unescaped; the wrapper escapes them, so names with quotes work as they do on
  Snowflake.
- With --db-path every session shares one on-disk database, so a killed and restarted
  server keeps its tables, like the real service does.
- Concurrent sessions: DuckDB reports a write conflict as an exception fakesnow calls
  unhandled; it is answered as Snowflake's 000625 (a statement aborted by a concurrent
  transaction), which a client may retry. A session that stops talking with a transaction
  open (its client was killed) has the transaction rolled back after --abandon-after
  seconds, as Snowflake ends the transactions of a dead session.
"""

import argparse
import asyncio
import importlib
import json
import time
from string import Template

import duckdb
import snowflake.connector.errors

import uvicorn
from fakesnow import info_schema
from fakesnow.instance import FakeSnow

# `fakesnow.server` is also the name of a function in the package: import the module itself.
server = importlib.import_module("fakesnow.server")

_comment_sql = info_schema.insert_table_comment_sql


def _comment_unless_empty(catalog, schema, table, comment):
    if not comment:
        return "SELECT 1"
    return _comment_sql(catalog, schema, table, comment)


info_schema.insert_table_comment_sql = _comment_unless_empty

_text_lengths_sql = info_schema.insert_text_lengths_sql


def _quoted(name):
    return name.replace("'", "''")


def _text_lengths_escaped(catalog, schema, table, text_lengths):
    return _text_lengths_sql(
        _quoted(catalog),
        _quoted(schema),
        _quoted(table),
        [(_quoted(column), size) for column, size in text_lengths],
    )


info_schema.insert_text_lengths_sql = _text_lengths_escaped


class _QuotingTemplate(Template):
    def substitute(self, *args, **values):
        quoted = {k: _quoted(v) if isinstance(v, str) else v for k, v in values.items()}
        return super().substitute(*args, **quoted)


_cursor = importlib.import_module("fakesnow.cursor")
for _name in dir(_cursor):
    _template = getattr(_cursor, _name)
    if _name.startswith("SQL_") and isinstance(_template, Template):
        setattr(_cursor, _name, _QuotingTemplate(_template.template))


_execute = _cursor.FakeSnowflakeCursor._execute


def _execute_reporting_conflicts(self, *args, **kwargs):
    try:
        return _execute(self, *args, **kwargs)
    except duckdb.TransactionException as e:
        raise snowflake.connector.errors.OperationalError(
            msg=f"Statement aborted: conflict with a concurrent transaction ({e})",
            errno=625,
            sqlstate="57014",
        ) from None


_cursor.FakeSnowflakeCursor._execute = _execute_reporting_conflicts

# When each session was last heard from, by token.
_last_seen = {}


async def _roll_back_abandoned(after):
    while True:
        await asyncio.sleep(1)
        now = time.monotonic()
        for token, seen in list(_last_seen.items()):
            conn = server.sessions.get(token)
            if conn is None or now - seen < after:
                continue
            del _last_seen[token]
            try:
                conn._duck_conn.execute("ROLLBACK")
            except duckdb.Error:
                pass  # no transaction was open


def _fill_login(body):
    data = body.get("data")
    if not body.get("success") or not isinstance(data, dict):
        return body
    data.setdefault("sessionId", 1)
    data.setdefault("masterToken", "master-" + str(data.get("token", "")))
    data.setdefault("validityInSeconds", 3600)
    data.setdefault("masterValidityInSeconds", 14400)
    info = data.setdefault("sessionInfo", {})
    info.setdefault("roleName", "SYSADMIN")
    info.setdefault("warehouseName", None)
    return body


def _fill_query(body):
    data = body.get("data")
    if body.get("success") and isinstance(data, dict):
        if "rowset" in data and data["rowset"] is not None:
            data.setdefault("returned", len(data["rowset"]))
        else:
            data.setdefault("returned", data.get("total", 0))
        data.setdefault("finalRoleName", "SYSADMIN")
        data.setdefault("version", 1)
        data.setdefault("parameters", [])
        data.setdefault("rowtype", [])
        data.setdefault("total", 0)
        data.setdefault("queryId", "")
        data.setdefault("statementTypeId", 0)
        return body
    if not body.get("success"):
        if not isinstance(data, dict):
            data = {"errorCode": body.get("code") or "000000"}
            body["data"] = data
        data.setdefault("errorCode", body.get("code") or "000000")
        data["age"] = data.get("age") or 0
        data["internalError"] = bool(data.get("internalError"))
        data["queryId"] = data.get("queryId") or ""
        data["sqlState"] = data.get("sqlState") or ""
    return body


FILLERS = {
    "/session/v1/login-request": _fill_login,
    "/queries/v1/query-request": _fill_query,
}


class FillMissingFields:
    def __init__(self, app, abandon_after):
        self.app = app
        self.abandon_after = abandon_after
        self.sweeper = None

    async def __call__(self, scope, receive, send):
        if self.sweeper is None and scope["type"] == "http":
            self.sweeper = asyncio.get_running_loop().create_task(_roll_back_abandoned(self.abandon_after))
        if scope.get("path") == "/queries/v1/query-request":
            auth = dict(scope.get("headers", [])).get(b"authorization", b"").decode()
            _last_seen[auth[17:-1]] = time.monotonic()
        fill = FILLERS.get(scope.get("path", "")) if scope["type"] == "http" else None
        if fill is None:
            await self.app(scope, receive, send)
            return
        start = {}
        chunks = []

        async def capture(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    raw = b"".join(chunks)
                    try:
                        raw = json.dumps(fill(json.loads(raw))).encode()
                    except ValueError:
                        pass
                    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                    headers.append((b"content-length", str(len(raw)).encode()))
                    await send({**start, "headers": headers})
                    await send({"type": "http.response.body", "body": raw})

        await self.app(scope, receive, capture)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    parser.add_argument("--db-path")
    parser.add_argument("--abandon-after", type=float, default=10.0)
    args = parser.parse_args()
    if args.db_path:
        server.shared_fs = FakeSnow(db_path=args.db_path)
    uvicorn.run(
        FillMissingFields(server.app, args.abandon_after),
        host=args.host,
        port=args.port,
        ssl_certfile=args.certfile,
        ssl_keyfile=args.keyfile,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
