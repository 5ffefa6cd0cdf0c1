#!/usr/bin/env python3
"""A throwaway PostgreSQL cluster for the real-Debezium tests.

    pg_cluster.py start DIR PORT   initdb DIR/data (if absent), start it on 127.0.0.1:PORT,
                                   return once it accepts connections; prints the details
    pg_cluster.py stop DIR         stop it (immediate mode); a no-op if it is not running
    pg_cluster.py psql DIR PORT [psql args...]   run psql against it (as superuser postgres)

The cluster has wal_level=logical, replication slots and WAL senders for Debezium, and trust
authentication for local TCP connections (user `postgres`, database `postgres`).
As root, initdb refuses to run, so initdb/pg_ctl/postgres run as the `postgres` system user
(the Debian package creates it) and DIR is handed to it. Otherwise they run as the current user.
Only the standard library is used, so any python3 can run it.
"""
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time

def _pg_bin():
    """FLOE_PG_BIN, else /usr/lib/postgresql/15/bin, else the newest installed version."""
    if os.environ.get("FLOE_PG_BIN"):
        return os.environ["FLOE_PG_BIN"]
    if os.path.exists("/usr/lib/postgresql/15/bin/initdb"):
        return "/usr/lib/postgresql/15/bin"
    try:
        versions = sorted((d for d in os.listdir("/usr/lib/postgresql") if d.isdigit()), key=int)
    except OSError:
        versions = []
    return f"/usr/lib/postgresql/{versions[-1]}/bin" if versions else "/usr/lib/postgresql/15/bin"


PG_BIN = _pg_bin()
SUPERUSER = "postgres"


def _as_root():
    return os.geteuid() == 0


def _run_as(argv, **kw):
    """Run argv as the postgres system user when root, else as ourselves."""
    if _as_root():
        argv = ["runuser", "-u", "postgres", "--"] + argv
    return subprocess.run(argv, **kw)


def _chown_tree(path):
    if not _as_root():
        return
    pw = pwd.getpwnam("postgres")
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for f in files:
            os.chown(os.path.join(root, f), pw.pw_uid, pw.pw_gid)


def _port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start(base, port):
    base = os.path.abspath(base)
    data = os.path.join(base, "data")
    sockdir = os.path.join(base, "sock")
    log = os.path.join(base, "postgres.log")
    os.makedirs(base, exist_ok=True)
    os.makedirs(sockdir, exist_ok=True)
    if _as_root():
        # The postgres user must be able to reach DIR (e.g. a root-owned /tmp/xyz 0700).
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        os.chown(sockdir, pw.pw_uid, pw.pw_gid)
        parent = os.path.dirname(base)
        # Parents of DIR need search permission for others (mkdtemp makes 0700 dirs).
        while parent and parent != "/":
            st = os.stat(parent)
            if not st.st_mode & 0o001:
                os.chmod(parent, st.st_mode | 0o001)
            parent = os.path.dirname(parent)
    if not os.path.exists(os.path.join(data, "PG_VERSION")):
        if os.path.exists(data):
            shutil.rmtree(data)
        _run_as(
            [f"{PG_BIN}/initdb", "-D", data, "-U", SUPERUSER, "-A", "trust",
             "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
            check=True, stdout=subprocess.DEVNULL,
        )
        with open(os.path.join(data, "postgresql.conf"), "a") as f:
            f.write(
                "\n# floe test cluster\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {port}\n"
                f"unix_socket_directories = '{sockdir}'\n"
                "wal_level = logical\n"
                "max_replication_slots = 20\n"
                "max_wal_senders = 20\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                "shared_buffers = 32MB\n"
                "timezone = 'UTC'\n"
                "log_timezone = 'UTC'\n"
            )
        with open(os.path.join(data, "pg_hba.conf"), "w") as f:
            f.write(
                "local all all trust\n"
                "local replication all trust\n"
                "host all all 127.0.0.1/32 trust\n"
                "host replication all 127.0.0.1/32 trust\n"
            )
        _chown_tree(base)
    if _port_open(port) and _status(data):
        print(f"already running: host=127.0.0.1 port={port} user={SUPERUSER} dbname=postgres")
        return
    # -p port on the command line wins over the config (a restart may pick another port).
    r = _run_as(
        [f"{PG_BIN}/pg_ctl", "-D", data, "-l", log, "-w", "-t", "60",
         "-o", f"-p {port} -k {sockdir}", "start"],
        stdout=subprocess.DEVNULL,
    )
    if r.returncode != 0:
        try:
            sys.stderr.write(open(log).read()[-4000:])
        except OSError:
            pass
        sys.exit(f"pg_ctl start failed ({r.returncode})")
    deadline = time.time() + 60
    while time.time() < deadline:
        r = subprocess.run([f"{PG_BIN}/pg_isready", "-h", "127.0.0.1", "-p", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r.returncode == 0:
            break
        time.sleep(0.1)
    else:
        sys.exit("postgres did not accept connections within 60 s")
    print(f"postgres ready: host=127.0.0.1 port={port} user={SUPERUSER} dbname=postgres "
          f"url=postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres data={data} log={log}",
          flush=True)


def _status(data):
    r = _run_as([f"{PG_BIN}/pg_ctl", "-D", data, "status"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return r.returncode == 0


def stop(base):
    data = os.path.join(os.path.abspath(base), "data")
    if not os.path.exists(os.path.join(data, "postmaster.pid")):
        return
    r = _run_as([f"{PG_BIN}/pg_ctl", "-D", data, "-m", "immediate", "-w", "-t", "30", "stop"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if r.returncode != 0:
        # pg_ctl could not (e.g. a stale pid file): signal the postmaster directly.
        try:
            pid = int(open(os.path.join(data, "postmaster.pid")).readline())
            os.kill(pid, 9)
        except (OSError, ValueError):
            pass


def psql(base, port, args):
    env = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(port), PGUSER=SUPERUSER,
               PGDATABASE="postgres")
    return subprocess.run([f"{PG_BIN}/psql", "-X", "-v", "ON_ERROR_STOP=1"] + args, env=env).returncode


def main(argv):
    if len(argv) >= 4 and argv[1] == "start":
        start(argv[2], int(argv[3]))
    elif len(argv) == 3 and argv[1] == "stop":
        stop(argv[2])
    elif len(argv) >= 4 and argv[1] == "psql":
        sys.exit(psql(argv[2], int(argv[3]), argv[4:]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
