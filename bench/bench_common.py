"""What the bench scripts share: logging, ports, CPUs, the TLS device
listener every broker configuration starts from, and stopping a broker."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# The tests' harness holds what both need to agree on (stdlib only).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "test" / "integration"))
from devcert_harness import free_ports  # noqa: E402,F401  (the path above; re-exported)

MOSQUITTO = "/usr/sbin/mosquitto"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cpus_available():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_ticks():
    """The machine's CPU time so far from /proc/stat, in ticks: (steal,
    total, idle), idle counting the time waiting for I/O."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    return fields[7], sum(fields), fields[3] + fields[4]


def busy_cpu_ms(before, after):
    """CPU time the machine's processes used between two cpu_ticks() samples,
    in ms: neither idle nor stolen. Divided by the work done, a cost that
    does not depend on how much of the CPU the host lent elsewhere."""
    steal = after[0] - before[0]
    idle = after[2] - before[2]
    busy = (after[1] - before[1]) - steal - idle
    return 1000.0 * busy / os.sysconf("SC_CLK_TCK")


def steal_pct(before, after):
    """Share of the machine's CPU time between two cpu_ticks() samples that
    the hypervisor gave to other guests (steal): on a shared host, runs with
    much of it are slower for reasons of no version's making."""
    total = after[1] - before[1]
    return round(100.0 * (after[0] - before[0]) / total, 1) if total > 0 else 0.0


def listener_lines(log_file, plain_port, tls_port, pki, cafile=None):
    """mosquitto.conf lines: a plain listener (to probe readiness) and the
    TLS device listener with client certificates required, logging errors
    and warnings only. Configurations add their own lines after these.
    `cafile` (default: the PKI's CA) may bundle the CAs of several PKIs."""
    return [
        "user root" if os.geteuid() == 0 else "",
        "per_listener_settings false",
        "allow_anonymous false",
        "set_tcp_nodelay true",
        "persistence false",
        f"log_dest file {log_file}",
        "log_type error",
        "log_type warning",
        "connection_messages false",
        f"listener {plain_port} 127.0.0.1",
        f"listener {tls_port} 127.0.0.1",
        f"cafile {cafile or pki / 'ca.crt'}",
        f"certfile {pki / 'server.crt'}",
        f"keyfile {pki / 'server.key'}",
        "require_certificate true",
    ]


def write_config(path, lines):
    path.write_text("\n".join(line for line in lines if line) + "\n")
    return path


CONNECT_PROBE = bytes([0x10, 0x0E, 0x00, 0x04]) + b"MQTT" + bytes([0x04, 0x02, 0x00, 0x3C, 0x00, 0x02]) + b"pr"


def probe(port):
    """True once the listener answers a CONNECT with a CONNACK (any code)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(CONNECT_PROBE)
            data = s.recv(4)
            return len(data) >= 1 and data[0] == 0x20
    except OSError:
        return False


class Tools:
    """The built tools a benchmark runs; exits naming the first missing."""

    def __init__(self, build, who):
        build = Path(build).resolve()
        self.build = build
        self.loadgen = build / "bench/devcert_loadgen"
        self.fill_store = build / "bench/devcert_fill_store"
        self.devcertctl = Path(os.environ.get("DEVCERTCTL") or build / "admin/devcertctl")
        self.plugin = Path(os.environ.get("DEVCERT_PLUGIN") or build / "plugin/mosquitto_devcert.so")
        for p in (self.loadgen, self.fill_store, self.devcertctl, self.plugin):
            if not p.exists():
                sys.exit(f"{who}: {p} is missing: build it first")


def stop_broker(proc, timeout=30):
    """SIGTERM, then SIGKILL after `timeout` seconds; returns the exit status."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.returncode


def fill_store(fill_tool, store, pki, count, small=False, quiet=True):
    """A standalone store with the PKI's CA and devices (active) and `count`
    synthetic records (every tenth inactive), made by devcert_fill_store
    once and kept (a marker file says it is complete)."""
    marker = Path(f"{store}.filled")
    if marker.exists():
        return store
    log(f"filling {store} with {count} synthetic device records{' without PEMs' if small else ''}")
    shutil.rmtree(store, ignore_errors=True)
    t0 = time.monotonic()
    cmd = [str(fill_tool), "--db", str(store), "--ca", str(pki / "ca.crt"), "--devices", str(pki / "devices"),
           "--count", str(count)] + (["--small-records"] if small else [])
    quiet_kw = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL} if quiet else {}
    subprocess.run(cmd, check=True, **quiet_kw)
    marker.write_text(f"{count} records filled in {time.monotonic() - t0:.1f} s\n")
    return store
