"""The history store: a folder of small YAML files, one per entry, appended and never rewritten.

Layout (docs/history.md)::

    STORE/history.yaml                       # {format: harness-history, version: 1}
    STORE/entries/<added_at>-<id>.yaml       # one entry (entry.py), written atomically

Why files and not SQLite: two CI jobs (two machines, a shared or synced folder) add
at once without a lock, since every entry is a new file with a name of its own (its
time of addition to the microsecond and its content id), written to a temporary name
and renamed in; a damaged file costs that entry alone; and a store in git diffs as the
entries added. ``order`` is therefore not written: it is computed on reading, the
commits in the order their first entry was added (ties by id), so concurrent adders
never have to agree on a counter.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from harness.errors import BadInput
from harness.files.atomic import write_text_atomic
from harness.files.safe_yaml import loads, read_text
from harness.history.entry import problem

MARKER = "history.yaml"
ENTRIES = "entries"
MARKER_TEXT = "format: harness-history\nversion: 1\n"
MAX_ENTRY_BYTES = 1024 * 1024


def check_store(store: Path) -> None:
    """BadInput unless ``store`` is a history store, an empty folder or not there yet."""
    if store.exists() and not store.is_dir():
        raise BadInput(f"{store}: a history store is a folder, and this is a file")
    if not store.is_dir() or (store / MARKER).is_file() or (store / ENTRIES).is_dir():
        return
    # A first adder's temporary files (.NAME.XXXX.tmp) may be here before its marker is.
    if any(not p.name.startswith(".") for p in store.iterdir()):
        raise BadInput(f"{store}: not a history store (no {MARKER}) and not empty; give a new or empty folder")


def _stamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _file_name(added_at: str, entry_id: str) -> str:
    """``20261206T213501123456Z-<id>.yaml``: sorts by time of addition, never collides."""
    compact = added_at.replace("-", "").replace(":", "").replace(".", "").replace("+0000", "Z")
    return f"{compact}-{entry_id}.yaml"


def _id_of(name: str) -> str:
    return name[:-len(".yaml")].rpartition("-")[2]


def known_ids(store: Path) -> set[str]:
    folder = store / ENTRIES
    if not folder.is_dir():
        return set()
    return {_id_of(p.name) for p in folder.iterdir() if p.name.endswith(".yaml") and not p.name.startswith(".")}


def add(store: str | Path, entries: list[dict]) -> list[bool]:
    """Append ``entries`` (without ``added_at`` or ``order``); for each, whether it was added
    (False: an entry with its id is already there, or earlier in ``entries``)."""
    import yaml

    store = Path(store)
    check_store(store)
    if not entries:
        return []
    # entries/ first: another adder that finds it takes the folder for a store at once.
    (store / ENTRIES).mkdir(parents=True, exist_ok=True)
    if not (store / MARKER).is_file():
        write_text_atomic(store / MARKER, MARKER_TEXT)  # two first adders write the same text
    seen = known_ids(store)
    added = []
    for entry in entries:
        if entry["id"] in seen:
            added.append(False)
            continue
        seen.add(entry["id"])
        stamp = _stamp()
        body = {**entry, "added_at": stamp}
        text = yaml.safe_dump(body, sort_keys=False, default_flow_style=None, width=100, allow_unicode=True)
        write_text_atomic(store / ENTRIES / _file_name(stamp, entry["id"]), text)
        added.append(True)
    return added


def _read_one(path: Path) -> tuple[dict | None, str | None]:
    try:
        data = loads(read_text(path, "history entry", MAX_ENTRY_BYTES), path, "history entry")
    except BadInput as err:
        return None, f"{path}: damaged entry skipped ({err})"
    except OSError as err:
        return None, f"{path}: unreadable entry skipped ({err.strerror or err})"
    why = problem(data)
    if why is None and _id_of(path.name) != data["id"]:
        why = f"id: {data['id']!r} is not the {_id_of(path.name)!r} its file name says"
    return (None, f"{path}: damaged entry skipped ({why})") if why else (data, None)


def read_entries(store: str | Path) -> tuple[list[dict], list[str]]:
    """Every entry of the store, each with its ``order``, sorted by it (then by time of
    addition); and one warning per file skipped (damaged, unreadable), naming it.

    A store path that is missing or a file is BadInput; a folder with no entries, none.
    """
    store = Path(store)
    if not store.exists():
        raise BadInput(f"{store}: no history store here (harness history add creates one)")
    if not store.is_dir():
        raise BadInput(f"{store}: a history store is a folder, and this is a file")
    folder = store / ENTRIES
    entries, warnings, ids = [], [], set()
    files = sorted(p for p in folder.iterdir() if p.name.endswith(".yaml") and not p.name.startswith(".")) \
        if folder.is_dir() else []
    for path in files:
        entry, warning = _read_one(path)
        if warning:
            warnings.append(warning)
        elif entry["id"] not in ids:  # two adders of one report at the same instant: the first counts
            ids.add(entry["id"])
            entries.append(entry)
    entries.sort(key=lambda e: (e["added_at"], e["id"]))
    order: dict[str, int] = {}
    for entry in entries:
        entry["order"] = order.setdefault(entry["commit"], len(order))
    entries.sort(key=lambda e: (e["order"], e["added_at"], e["id"]))
    return entries, warnings


def series(entries: list[dict]) -> dict[tuple[str, str, str, str], list[dict]]:
    """(workload, mode, machine, figure) -> its entries in ``order``: one series each."""
    out: dict[tuple[str, str, str, str], list[dict]] = {}
    for entry in sorted(entries, key=lambda e: (e["order"], e["added_at"], e["id"])):
        for name in entry["figures"]:
            out.setdefault((entry["workload"], entry["mode"], entry["machine"], name), []).append(entry)
    return out
