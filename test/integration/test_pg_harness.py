"""The PostgreSQL test harness itself: the server runs unprivileged even
when the tests run as root, serves only its private UNIX socket, survives
a stop/start with its data, and leaves nothing behind, also when the test
process is killed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pg_harness import PgServer


def test_server_runs_unprivileged_on_a_private_socket_and_keeps_data_across_a_restart():
    with PgServer() as pg:
        db = pg.create_database()
        assert pg.psql(db, "SELECT current_setting('listen_addresses')") == ""
        assert pg.psql(db, "SELECT current_setting('fsync')") == "off"
        if os.geteuid() == 0:
            owner = Path(pg.data).stat().st_uid
            assert owner != 0
            pid = int((Path(pg.data) / "postmaster.pid").read_text().split()[0])
            assert os.stat(f"/proc/{pid}").st_uid == owner
        pg.psql(db, "CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
        pg.stop()
        assert not list(Path(pg.dir).glob(".s.PGSQL.*"))
        pg.start()
        assert pg.psql(db, "SELECT x FROM t") == "42"
        assert pg.create_database() != db
        directory = pg.dir
    assert not Path(directory).exists()


def test_a_killed_test_process_leaves_no_server_behind():
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; sys.path.insert(0, sys.argv[1]); from pg_harness import PgServer;"
         "pg = PgServer().init().start(); print(pg.dir, flush=True); time.sleep(600)",
         str(Path(__file__).parent)],
        stdout=subprocess.PIPE, text=True)
    directory = child.stdout.readline().strip()
    assert directory and Path(directory, "data", "postmaster.pid").exists()
    pid = int(Path(directory, "data", "postmaster.pid").read_text().split()[0])
    child.send_signal(signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (Path(directory).exists() or Path(f"/proc/{pid}").exists()):
        time.sleep(0.1)
    assert not Path(directory).exists()
    assert not Path(f"/proc/{pid}").exists()
