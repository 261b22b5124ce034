"""Starting the job's Ray, and clearing what a killed earlier run of it left behind.

A local Ray (no RAY_ADDRESS) is started by the job itself. When a driver is killed (SIGKILL, OOM),
Ray's dashboard and runtime-env agents outlive it. So the job records the Ray processes it started
(pid and kernel start time, the run's id, which every process of that Ray inherits in its
environment, and the driver's own pid) in OUTPUT/.ray-processes.json; the next run on that output
stops exactly the processes that carry that run's id in their environment (a reused pid, or a
process named by a planted record, never does), unless the recorded driver is still alive, then
records its own. A clean
exit removes the record. Processes of a cluster (RAY_ADDRESS) are never touched.

Under an address-space limit (`ulimit -v`), which every Ray process inherits, Ray's default object
store (30% of memory) cannot be mapped and the node never comes up; the store is sized to fit the
limit, or the job says which limit to raise before starting anything.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

from manifests.io import write_json_atomic

log = logging.getLogger("curation")

RECORD = ".ray-processes.json"
RAY_BASE_BYTES = int(2.75 * 2**30)  # address space the driver needs besides the object store it maps (measured)
MIN_STORE_BYTES = 128 * 2**20


class MemoryLimitError(RuntimeError):
    """The process limits leave no room for a local Ray; the message says which limit and what to do."""


def object_store_bytes() -> int | None:
    """The object store a local Ray can map under this process's address-space limit (`ulimit -v`,
    which every Ray process inherits); None without a limit (Ray's own default, 30% of memory).
    Raises MemoryLimitError when not even a small store fits."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    # The raylet maps the store twice (it hosts it and, pinning objects, maps it again as a client):
    # under the limit, twice the store must fit beside what a process needs anyway.
    room = (soft - RAY_BASE_BYTES) // 2
    if room < MIN_STORE_BYTES:
        raise MemoryLimitError(
            f"the address-space limit (ulimit -v) is {soft / 2**30:.2f} GiB, and the job with a local Ray needs "
            f"about {(RAY_BASE_BYTES + 2 * MIN_STORE_BYTES) / 2**30:.1f} GiB in each of its processes: raise it (`ulimit -v unlimited`, "
            "or your scheduler's memory setting), or run against a cluster with RAY_ADDRESS"
        )
    return min(room, _memory_bytes() * 3 // 10) if _memory_bytes() else room


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def descendants(pid: int) -> list[int]:
    """Every living process below `pid` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


RUN_ENV = "MASK2DIT_RAY_RUN"  # set before a local Ray starts: every process of it inherits the run's id


def _environ_has(pid: int, entry: str) -> bool:
    """Whether the process's environment holds `entry` (NAME=value); False where it cannot be read."""
    try:
        return entry.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def record_processes(output: Path) -> None:
    """Note the Ray processes this driver started (its descendants), for a later run to clear: each
    pid with its start time, the run's id (in every such process's environment) and the driver's
    own pid and start time (a later run leaves a live driver's processes alone)."""
    run = os.environ.get(RUN_ENV)
    if not run:
        return
    known = _read(output)
    entries = [{"pid": pid, "start": start} for pid in descendants(os.getpid())
               if (start := process_start_time(pid)) is not None]  # fmt: skip
    if known.get("run") == run:
        entries += known.get("processes", [])
    merged = {(e["pid"], e["start"]): e for e in entries}
    record = {"run": run, "driver": {"pid": os.getpid(), "start": process_start_time(os.getpid())},
              "processes": list(merged.values())}  # fmt: skip
    write_json_atomic(_record(output), record)  # replaced whole: a link planted at its path is never followed


def clear_orphans(output: Path) -> int:
    """Stop the recorded Ray processes of an earlier, killed run that are still alive; how many.

    A process is signalled only when it is provably that run's own: its environment holds the run's
    id, a random one that only the Ray that run started inherited (a reused pid does not). A planted
    record naming someone else's process proves nothing and stops nothing.
    While the recorded driver itself is alive (its lock was deleted, say), nothing is touched."""
    record = _read(output)
    run, driver = record.get("run"), record.get("driver") or {}
    if not isinstance(run, str) or not run:
        _record(output).unlink(missing_ok=True)
        return 0
    if isinstance(driver.get("pid"), int) and process_start_time(driver["pid"]) == driver.get("start") is not None:
        log.warning("the Ray processes recorded in %s belong to a live job (pid %s); left alone",
                    _record(output), driver["pid"])  # fmt: skip
        return 0
    stopped = 0
    # Every process that carries the run's id: the recorded ones, and the agents a run started in its
    # first seconds, before it could record them. A reused pid carries another environment.
    for pid in _all_pids():
        if pid == os.getpid() or not _environ_has(pid, f"{RUN_ENV}={run}"):
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            stopped += 1
        except (ProcessLookupError, PermissionError):
            pass
    _record(output).unlink(missing_ok=True)
    return stopped


def _all_pids() -> list[int]:
    proc = Path("/proc")
    return [int(p.name) for p in proc.iterdir() if p.name.isdigit()] if proc.is_dir() else []


def begin_record(output: Path) -> None:
    """Before the local Ray starts: the run's id (set in this process's environment, inherited by all
    it starts) and this driver, so even a run killed in its first seconds is cleared by the next."""
    import uuid

    os.environ[RUN_ENV] = uuid.uuid4().hex
    record = {"run": os.environ[RUN_ENV], "driver": {"pid": os.getpid(), "start": process_start_time(os.getpid())},
              "processes": []}  # fmt: skip
    write_json_atomic(_record(output), record)


def forget(output: Path) -> None:
    _record(output).unlink(missing_ok=True)


def _record(output) -> Path:
    """Where the process record lives: in the output folder, or for an object-store output (these
    are this machine's pids) in a local folder named after it."""
    if isinstance(output, Path):
        return output / RECORD
    import hashlib

    folder = (
        Path.home() / ".cache" / "mask2dit" / "ray" / hashlib.blake2b(str(output).encode(), digest_size=8).hexdigest()
    )
    folder.mkdir(parents=True, exist_ok=True)
    return folder / RECORD


def _read(output: Path) -> dict:
    """The record, or {} (missing, unreadable, or an older format that proves nothing)."""
    try:
        data = json.loads(_record(output).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    data["processes"] = [e for e in data.get("processes", []) if isinstance(e, dict)] if isinstance(
        data.get("processes"), list) else []  # fmt: skip
    return data


def start_ray(num_cpus: int, output: Path) -> bool:
    """Connect to RAY_ADDRESS, or start a local Ray; True when this call started one (and recorded
    its processes under `output`)."""
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return False
    store = object_store_bytes()  # before anything starts: a clear line instead of a startup timeout
    stopped = clear_orphans(output)
    begin_record(output)  # the run's id, inherited by every process of the Ray started below
    if stopped:
        print(f"stopped {stopped} Ray processes left behind by an earlier run on {output} that was killed")
    # Workers of a local Ray must import this repository even when it is not pip-installed.
    # Set in this process's environment, which the local Ray's processes inherit, rather than as a
    # runtime_env: workers of a job-level runtime_env cannot be the ones Ray prestarts while it
    # starts, so the first task of every stage would wait for a new worker (about 1.4 s measured).
    root = str(Path(__file__).resolve().parent.parent)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths if root in paths else [root, *paths])
    # A local Ray enables token auth and warns as if the user had to act; nothing is to be done for a
    # Ray this job starts and stops itself, so one calm line replaces the warning.
    token_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = token_log.level
    token_log.setLevel(logging.ERROR)
    try:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            object_store_memory=store,
            logging_level=logging.WARNING,
        )
    finally:
        token_log.setLevel(level)
    if _token_auth():
        print("local Ray started for this job (token authentication on; nothing to set up)", flush=True)
    record_processes(output)
    return True


def stop_ray() -> None:
    """Stop the local Ray this job started, at its clean end rather than at interpreter exit.

    Ray's exit hook first sleeps 0.5 s for worker log lines, then stops its processes one by one,
    giving each a second to exit after SIGTERM; the autoscaler monitor (nothing to scale on a local
    Ray, and no state) always takes that whole second. Killed first, it costs nothing: the job's
    shutdown went from about 1.4 s to 0.1 s (docs/benchmarks.md)."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)  # private: guarded, Ray's own shutdown follows
    for info in (getattr(node, "all_processes", None) or {}).get("monitor", []):
        try:
            info.process.kill()
            info.process.wait(timeout=1)
        except Exception:  # gone already, or not ours to wait for: ray.shutdown stops it as before
            pass
    ray.shutdown()


def _token_auth() -> bool:
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled

        return bool(is_token_auth_enabled())
    except (ImportError, AttributeError):
        return False
