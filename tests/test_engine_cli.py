"""``ringbook run``, ``replay``, ``stat`` and ``send`` as real processes: signals, SIGKILL, UDP on loopback."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from ringbook.engine import counters as C


RINGBOOK = [sys.executable, "-m", "ringbook.engine.cli"]
pytestmark = pytest.mark.slow


def ringbook(*args, timeout=180, **kwargs):
    return subprocess.run(RINGBOOK + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def start(*args, cwd=None):
    return subprocess.Popen(RINGBOOK + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=cwd)


def wait_running(name, events=1, timeout=120):
    """Wait until engine ``name``'s counters say it runs and has applied ``events``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            snapshot = C.read(name)
            if snapshot["state"] == "running" and snapshot["book_events"] >= events:
                return snapshot
        except (FileNotFoundError, C.CountersError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"engine {name} did not start")


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_run_with_no_options_writes_a_journal_here(tmp_path):
    done = ringbook("run", "--json", "--no-mlock", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for key in ("events", "throughput_eps", "latency_ns", "dropped", "gaps", "journal", "threads", "mlock"):
        assert key in report
    assert set(report["latency_ns"]) >= {"p50", "p90", "p99", "p999", "max"}
    assert set(report["journal"]) >= {"dir", "files", "records", "bytes", "last_durable_sequence"}
    for thread in report["threads"].values():
        assert {"core", "minor_faults", "major_faults", "voluntary_switches", "involuntary_switches"} <= set(thread)
    assert set(report["mlock"]) >= {"locked_bytes", "error"}
    assert 2.5 <= report["duration_s"] < 30 and report["events"] > 100_000
    journal_dir = report["journal"]["dir"]
    assert os.path.dirname(journal_dir) == str(tmp_path) and "ringbook-run-" in journal_dir
    assert f"journal {os.path.basename(journal_dir)}" in done.stderr  # printed at start
    replayed = ringbook("replay", journal_dir, "--json")
    assert replayed.returncode == 0, replayed.stderr
    result = json.loads(replayed.stdout)
    assert result["events"] == report["events"]
    assert result["checkpoints"]["matched"] == report["checkpoints"] > 0
    assert result["checkpoints"]["mismatched"] == 0
    assert {"events", "gaps", "checkpoints"} <= set(result)


def run_then_signal(number, name, events, *args):
    """Start ``ringbook run ARGS``, send signal ``number`` once it has applied ``events``; its output."""
    process = start("run", "--duration", 120, "--no-mlock", "--name", name, *args)
    try:
        wait_running(name, events=events)
        process.send_signal(number)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    return stdout


def test_sigint_drains_and_exits_zero(tmp_path):
    name = f"sigint{os.getpid()}"
    stdout = run_then_signal(signal.SIGINT, name, 50_000, "--rate", 300_000, "--out", tmp_path / "j", "--json")
    report = json.loads(stdout)
    assert report["stopped_by"] == "SIGINT" and report["error"] is None
    assert report["duration_s"] < 100
    verified = ringbook("journal", "verify", tmp_path / "j", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    replayed = json.loads(ringbook("replay", tmp_path / "j", "--json").stdout)
    assert replayed["events"] == report["events"]  # drained: everything applied is on disk
    assert replayed["checkpoints"]["mismatched"] == 0 and replayed["checkpoints"]["beyond_end"] == 0
    assert not C.region_path(name).exists()


def test_sigterm_too(tmp_path):
    stdout = run_then_signal(signal.SIGTERM, f"sigterm{os.getpid()}", 10_000, "--out", "")
    assert "stopped by      SIGTERM" in stdout


def test_sigkill_mid_run_then_verify_and_replay(tmp_path):
    name = f"sigkill{os.getpid()}"
    out = tmp_path / "j"
    process = start("run", "--duration", 120, "--rate", 300_000, "--out", out, "--no-mlock", "--name", name,
                    "--checkpoint-every", 2000)
    try:
        wait_running(name, events=300_000)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    # the dead engine's counters are recognised, and stat says so
    stat = ringbook("stat", name, "--json")
    assert stat.returncode == 0 and json.loads(stat.stdout)["state"] == "dead"
    os.unlink(C.region_path(name))
    verified = json.loads(ringbook("journal", "verify", out, "--json").stdout)
    assert verified["bad_records"] == 0
    replayed = ringbook("replay", out, "--json")
    result = json.loads(replayed.stdout)
    assert result["events"] >= 300_000 * 0.5
    assert result["checkpoints"]["matched"] > 10
    assert result["checkpoints"]["mismatched"] == 0


def _udp_run(tmp_path, port, name, send_args):
    receiver = start("run", "--feed", f"udp:127.0.0.1:{port}", "--duration", 8, "--out", tmp_path / name,
                     "--no-mlock", "--name", name, "--json")
    try:
        wait_running(name, events=0)
        sent = ringbook("send", "synthetic", "--to", f"127.0.0.1:{port}", "--rate", 100_000, "--json",
                        *send_args)
        assert sent.returncode == 0, sent.stderr
        stdout, stderr = receiver.communicate(timeout=120)
    finally:
        receiver.kill()
    assert receiver.returncode == 0, stderr
    return json.loads(sent.stdout), json.loads(stdout)


def test_udp_loopback_with_ringbook_send(tmp_path):
    port = free_udp_port()
    sent, report = _udp_run(tmp_path, port, f"udp{os.getpid()}", ["--events", 20_000])
    assert report["udp"]["rcvbuf_requested"] == 4 << 20 and report["udp"]["rcvbuf_granted"] > 0
    assert report["udp"]["receive"] == ("recvmmsg" if sys.platform.startswith("linux") else "recv_into")
    assert report["udp"]["packets_received"] == sent["packets"]
    assert report["events"] == sent["events"] and report["messages"] == sent["packets"]
    assert report["packet_gaps"] == 0 and report["reorders"] == 0
    replayed = json.loads(ringbook("replay", report["journal"]["dir"], "--json").stdout)
    assert replayed["events"] == sent["events"] and replayed["checkpoints"]["mismatched"] == 0


def test_udp_gaps_counted_when_packets_are_dropped(tmp_path):
    port = free_udp_port()
    sent, report = _udp_run(tmp_path, port, f"udpgap{os.getpid()}", ["--events", 20_000, "--skip-every", 10])
    assert sent["skipped"] > 0
    assert report["events"] == sent["events"]
    # a skipped last packet is never seen as missing: nothing follows it
    assert sent["skipped"] - 1 <= report["packet_gaps"] <= sent["skipped"]
    replayed = json.loads(ringbook("replay", report["journal"]["dir"], "--json").stdout)
    assert replayed["gap_detail"]["feed"] == report["packet_gaps"]


def test_bad_feed_is_a_clear_error(tmp_path):
    done = ringbook("run", "--feed", "nasdaq:x", "--out", "")
    assert done.returncode == 2 and "--feed 'nasdaq:x'" in done.stderr
    done = ringbook("run", "--feed", "udp:localhost:notaport", "--out", "")
    assert done.returncode == 2 and "port 'notaport' is not a number" in done.stderr
