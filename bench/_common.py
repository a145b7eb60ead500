"""What the benchmarks share: percentiles, the machine, free ports, child processes, tables.

Not a benchmark itself. Every bench script puts the repository on ``sys.path``
and imports this module as ``_common`` (it sits beside them).
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile of ``values`` (nearest rank; 0 for an empty list)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def machine() -> dict[str, str]:
    """The facts a reader needs to compare figures: cores, CPU model, Python, SQLite."""
    import sqlite3

    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "system": f"{platform.system()} {platform.release()}",
    }


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    """Block until something accepts TCP connections on ``port`` (or the child died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.recv(512)  # the banner: the server is really serving, not just bound
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout}s")


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM a child and wait for it (SIGKILL if it will not go)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def pin(proc_or_pid, cpus: set[int]) -> bool:
    """Keep a process on ``cpus`` so client and server do not share a core; False if not possible."""
    pid = getattr(proc_or_pid, "pid", proc_or_pid)
    try:
        os.sched_setaffinity(pid, cpus)
        return True
    except (AttributeError, OSError):
        return False


def write_config(folder: Path, *, smtp_port: int, **sections: dict) -> Path:
    """A mailer config file under ``folder`` (web desk off, Maildir delivery) for a bench run."""
    values: dict[str, dict] = {
        "smtp": {"port": smtp_port},
        "storage": {"database": "mailer.db"},
        "delivery": {"mode": "maildir", "maildir": "maildir"},
        "web": {"enabled": False},
        "digest": {"schedules": "schedules"},
        # The benches measure acknowledging every letter of a burst: no hourly cap.
        "acknowledgements": {"max_per_hour": 0},
    }
    for name, extra in sections.items():
        values.setdefault(name, {}).update(extra)
    lines = []
    for name, table in values.items():
        lines.append(f"[{name}]")
        for key, value in table.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, (int, float)):
                lines.append(f"{key} = {value}")
            else:
                lines.append(f"{key} = {str(value)!r}".replace("'", '"'))
        lines.append("")
    path = folder / "mailer.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def print_table(title: str, columns: list[str], rows: list[list[str]], notes: list[str] = ()) -> None:
    """A small table on stdout (rich when it is there, plain text otherwise)."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a dependency of mailer
        print(title)
        print("  ".join(columns))
        for row in rows:
            print("  ".join(row))
        for note in notes:
            print(note)
        return
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console = Console(width=max(100, Console().width))
    console.print(table)
    for note in notes:
        console.print(note, highlight=False)
