"""Monitoring and metadata off the server, and metadata back onto a new one.

- ``monitor``: each running node's monitor JSON plus ``port`` and ``type``, one POST per node to
  ``controller.monitor`` (streaming-utils' monitor_nodes.py; ``type`` is the command line's, since an HLS source
  runs as a support node).
- ``update-metadata``: ``{"<name>": {"last_seq": N, "private_key": "<.sauth>"}}`` in one POST to
  ``controller.metadata_receiver`` (update_metadata.py). A stream missing one of its two files is skipped with a
  warning instead of aborting every stream's push.
- ``restore``: a source entry's ``metadata`` becomes ``<uid>.sauth`` (mode 0600) and ``<uid>.restart`` before the
  node starts, so it broadcasts under the same content id with piece numbers that continue. A key file already here
  that differs refuses the start (it would be another broadcast, and overwriting it loses the one that runs); a
  local ``.restart`` ahead of the controller's is kept (the controller's copy is older: numbers never go back).
  Keys are never logged: messages name files and a short SHA-256 of a key at most.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from swarmcast.files import UnreadableFileError, read_regular_file, write_file_atomically
from swarmcast.fleet.commandline import NodeSpec
from swarmcast.fleet.config import STREAM_UID, AppConfig
from swarmcast.fleet.controller import ControllerError, node_monitor, post_json, redact
from swarmcast.fleet.processes import alive, read_pid_files
from swarmcast.fleet.records import load_records

MAX_KEY_BYTES = 16 * 1024


def fingerprint(key: str | bytes) -> str:
    data = key.encode() if isinstance(key, str) else key
    return hashlib.sha256(data).hexdigest()[:12]



def restore_metadata(app: AppConfig, spec: NodeSpec, say: Callable[[str], None] = print) -> None:
    """Before a source starts: its entry's metadata into dirs.metadata. ValueError refuses the start."""
    entry = spec.source
    if entry is None or entry.metadata is None or entry.type != "ts":
        return  # streaming-utils restores TS streams' keys only (an HLS stream's transport files are its own)
    directory = app.dir("metadata")
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / f"{entry.stream_uid}.sauth"
    seq_path = directory / f"{entry.stream_uid}.restart"
    key = entry.metadata.private_key.encode()
    if key_path.exists():
        try:
            local = read_regular_file(key_path, MAX_KEY_BYTES)
        except UnreadableFileError as error:
            raise ValueError(f"metadata: {key_path}: {error}") from None
        if local.strip() != key.strip():
            raise ValueError(f"metadata mismatch: {key_path} holds key {fingerprint(local.strip())}, the "
                             f"controller's is {fingerprint(key.strip())}; not overwritten")  # fmt: skip
    else:
        write_file_atomically(key_path, key, mode=0o600, durable=True)
        say(f"restore: {entry.stream_uid}: key written to {key_path} (key {fingerprint(key.strip())})")
    local_seq = 0
    if seq_path.exists():
        text = read_regular_file(seq_path, 64)[:64].decode("ascii", "replace").strip()
        local_seq = int(text) if text.isdigit() else 0
    if entry.metadata.last_seq > local_seq:
        write_file_atomically(seq_path, f"{entry.metadata.last_seq}\n".encode(), mode=0o600, durable=True)
        say(f"restore: {entry.stream_uid}: piece numbers continue from {entry.metadata.last_seq}")


def collect_metadata(app: AppConfig) -> tuple[dict[str, dict[str, object]], list[str]]:
    """Every stream's (.restart, .sauth) pair in dirs.metadata; and warnings for incomplete ones."""
    directory = app.dir("metadata")
    found: dict[str, dict[str, object]] = {}
    warnings: list[str] = []
    if not directory.is_dir():
        return found, warnings
    for path in sorted(directory.iterdir()):
        name, ext = path.stem, path.suffix
        if ext not in (".restart", ".sauth") or not STREAM_UID.fullmatch(name):
            continue
        try:
            data = read_regular_file(path, MAX_KEY_BYTES)
        except UnreadableFileError as error:
            warnings.append(f"{path}: {error}")
            continue
        entry = found.setdefault(name, {"last_seq": None, "private_key": None})
        if ext == ".restart":
            text = data[:64].decode("ascii", "replace").strip()
            if text.isdigit():
                entry["last_seq"] = int(text)
            else:
                warnings.append(f"{path}: not a piece number")
        else:
            entry["private_key"] = data.decode("ascii", "replace")
    for name in list(found):
        missing = [k for k, v in found[name].items() if v is None]
        if missing:
            warnings.append(f"{name}: no {' and no '.join(missing)} in {directory}: not sent")
            del found[name]
    return found, warnings


def update_metadata(app: AppConfig, say: Callable[[str], None] = print) -> int:
    url = app.controller.metadata_receiver
    if not url:
        say(f"error: {app.path}: controller.metadata_receiver is not set")
        return 1
    metadata, warnings = collect_metadata(app)
    for warning in warnings:
        say(f"warning: {warning}")
    if not metadata:
        say("update-metadata: no stream metadata to send")
        return 1 if warnings else 0
    try:
        answer = post_json(app, url, metadata)
    except ControllerError as error:
        say(f"error: {error}")
        return 1
    names = ", ".join(f"{n} (last_seq {m['last_seq']})" for n, m in metadata.items())
    if answer.status != 200:
        say(f"error: update-metadata: {redact(url)} answered HTTP {answer.status}: "
            f"{answer.body[:200].decode('utf-8', 'replace')}")  # fmt: skip
        return 1
    say(f"update-metadata: sent {len(metadata)} stream(s) to {redact(url)}: HTTP {answer.status}: {names}")
    return 0


def push_monitor(app: AppConfig, node_type: str, say: Callable[[str], None] = print) -> int:
    url = app.controller.monitor
    if not url:
        say(f"error: {app.path}: controller.monitor is not set")
        return 1
    records = load_records(app.dir("state"))
    failed = sent = 0
    for port, pid_file in sorted(read_pid_files(app.dir("pid")).items()):
        record = records.get(port)
        if record is not None and record.kind != node_type:
            continue  # the other kind's node on this server: its own monitor run sends it
        if pid_file.pid is None or not alive(pid_file.pid, port):
            continue
        try:
            data = node_monitor(app, port)
        except ControllerError as error:
            say(f"error: {node_type} {port}: {error}")
            failed += 1
            continue
        data["port"] = port
        data["type"] = node_type
        try:
            answer = post_json(app, url, data)
        except ControllerError as error:
            say(f"error: {node_type} {port}: {error}")
            failed += 1
            continue
        if answer.status != 200:
            say(f"error: {node_type} {port}: {redact(url)} answered HTTP {answer.status}")
            failed += 1
            continue
        sent += 1
    say(f"monitor: {sent} {node_type} node(s) sent to {redact(url)}, {failed} failed")
    return 1 if failed else 0


