"""What this fleet started: one small JSON file per node in ``dirs.state/fleet-nodes/<port>.json``.

streaming-utils keeps no such record and so cannot tell a node whose command line changed from one that is fine,
nor a source from a support node (its start_streamers.py stops every instance it does not recognise, support
nodes included). A record holds the node's kind, name, exact command line, pid, and how many runs in a row found
its monitor silent (the failed-twice rule).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from swarmcast.files import UnreadableFileError, read_regular_file

RECORDS_DIR = "fleet-nodes"
MAX_RECORD_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Record:
    kind: str
    port: int
    name: str
    argv: tuple[str, ...]
    pid: int | None = None
    started_at: float = 0.0
    failures: int = 0
    last_error: str = ""
    adopted: bool = False  # found running (started by something else) and taken over as it was

    def with_(self, **changes: object) -> Record:
        return replace(self, **changes)  # type: ignore[arg-type]


def records_dir(state_dir: Path) -> Path:
    return state_dir / RECORDS_DIR


def load_records(state_dir: Path) -> dict[int, Record]:
    found: dict[int, Record] = {}
    directory = records_dir(state_dir)
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(read_regular_file(path, MAX_RECORD_BYTES))
            record = Record(kind=str(data["kind"]), port=int(data["port"]), name=str(data["name"]),
                            argv=tuple(str(w) for w in data["argv"]),
                            pid=int(data["pid"]) if data.get("pid") else None,
                            started_at=float(data.get("started_at", 0.0)), failures=int(data.get("failures", 0)),
                            last_error=str(data.get("last_error", "")),
                            adopted=bool(data.get("adopted", False)))  # fmt: skip
        except (UnreadableFileError, ValueError, KeyError, TypeError):
            continue  # a damaged record: the node is then treated as not ours, and reported
        found[record.port] = record
    return found


def save_record(state_dir: Path, record: Record) -> None:
    directory = records_dir(state_dir)
    # A record holds the node's command line, and that holds --service-access-token and --provider-key: owner only.
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    path = directory / f"{record.port}.json"
    data = asdict(record)
    data["argv"] = list(record.argv)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{record.port}.", suffix=".tmp")  # 0600, never a planted file
    with os.fdopen(fd, "w") as file:
        file.write(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def delete_record(state_dir: Path, port: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        (records_dir(state_dir) / f"{port}.json").unlink()
