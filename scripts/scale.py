#!/usr/bin/python3
"""Measurement tool for scripts/scale.sh (stdlib only; run inside the
benchmark's client namespace, never elsewhere: it binds to --src, an address
that exists only there). Every loop is bounded in count and in time.

  scale.py rst --src IP --dst IP --port N --n TRIALS
      connect→RST latency of an unrelated client: a blocking connect to a
      port the admin's baseline rejects with a TCP reset, timed per trial.
  scale.py send --src IP --dst IP --port N --file HEX [--rate PPS]
      sends one UDP datagram per hex line of FILE, paced at PPS.
  scale.py openclose --src IP --dst IP --spa-port N --port N --opens HEX --closes HEX
      per pair: send the open datagram, poll a TCP connect until it is
      accepted (open latency); send the close datagram, poll until refused
      (close latency).
Prints one JSON object on stdout.
"""

import json
import socket
import sys
import time

MAX_SECS = 120  # no subcommand runs longer than this


def arg(name, default=None):
    argv = sys.argv
    if name in argv:
        i = argv.index(name)
        if i + 1 < len(argv):
            return argv[i + 1]
    if default is None:
        sys.exit(f"scale.py: missing {name}")
    return default


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p))]


def family(ip):
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def connect_once(src, dst, port, timeout=0.5):
    """'ok', 'refused' or 'timeout', and the microseconds it took."""
    s = socket.socket(family(dst), socket.SOCK_STREAM)
    try:
        s.bind((src, 0))
        s.settimeout(timeout)
        t0 = time.perf_counter_ns()
        try:
            s.connect((dst, port))
            r = "ok"
        except ConnectionRefusedError:
            r = "refused"
        except (socket.timeout, OSError):
            r = "timeout"
        return r, (time.perf_counter_ns() - t0) / 1000
    finally:
        s.close()


def rst():
    src, dst, port, n = arg("--src"), arg("--dst"), int(arg("--port")), int(arg("--n"))
    deadline = time.monotonic() + MAX_SECS
    times, other = [], 0
    for _ in range(min(n, 100_000)):
        if time.monotonic() > deadline:
            break
        r, us = connect_once(src, dst, port)
        if r == "refused":
            times.append(us)
        else:
            other += 1
    print(json.dumps({"n": len(times), "not_refused": other,
                      "p50_us": pct(times, 0.5), "p90_us": pct(times, 0.9)}))


def sender(src, dst):
    s = socket.socket(family(dst), socket.SOCK_DGRAM)
    s.bind((src, 0))
    return s


def lines(path):
    with open(path) as f:
        return [bytes.fromhex(l.strip()) for l in f if l.strip()]


def send():
    src, dst, port = arg("--src"), arg("--dst"), int(arg("--port"))
    rate = float(arg("--rate", "1000"))
    s = sender(src, dst)
    t0 = time.monotonic()
    sent = 0
    for i, d in enumerate(lines(arg("--file"))[:100_000]):
        due = t0 + i / rate
        while True:
            now = time.monotonic()
            if now >= due or now - t0 > MAX_SECS:
                break
            time.sleep(min(due - now, 0.01))
        if time.monotonic() - t0 > MAX_SECS:
            break
        s.sendto(d, (dst, port))
        sent += 1
    print(json.dumps({"sent": sent, "secs": round(time.monotonic() - t0, 3)}))


def poll(src, dst, port, want, limit=3.0):
    """Microseconds from now until a connect gives `want`; None past limit."""
    t0 = time.perf_counter_ns()
    end = time.monotonic() + limit
    while time.monotonic() < end:
        r, _ = connect_once(src, dst, port, timeout=0.2)
        if r == want:
            return (time.perf_counter_ns() - t0) / 1000
        time.sleep(0.0002)
    return None


def openclose():
    src, dst = arg("--src"), arg("--dst")
    spa, port = int(arg("--spa-port")), int(arg("--port"))
    opens, closes = lines(arg("--opens")), lines(arg("--closes"))
    s = sender(src, dst)

    def timed(datagram, want):
        """Send one datagram, time until the port answers `want`."""
        s.sendto(datagram, (dst, spa))
        return poll(src, dst, port, want)

    t_open, t_close, failed = [], [], 0
    start = time.monotonic()
    for o, c in list(zip(opens, closes))[:1000]:
        if time.monotonic() - start > MAX_SECS:
            break
        us = timed(o, "ok")
        if us is None:
            failed += 1
            continue
        t_open.append(us)
        us = timed(c, "refused")
        if us is None:
            failed += 1
            continue
        t_close.append(us)
    print(json.dumps({"n": len(t_open), "failed": failed,
                      "open_p50_us": pct(t_open, 0.5), "open_p90_us": pct(t_open, 0.9),
                      "close_p50_us": pct(t_close, 0.5), "close_p90_us": pct(t_close, 0.9)}))


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    {"rst": rst, "send": send, "openclose": openclose}.get(
        cmd, lambda: sys.exit(__doc__))()
