"""Runs trained elsewhere: a CSV or JSONL with columns params, tokens, loss [, budget, flops, id, unique_tokens].

``unique_tokens`` (optional): the unique data a run was trained on; a run with tokens > unique_tokens repeated
it, and ff-analyze fits the data-constrained law to such runs (docs/data-constrained.md).

The only module of :mod:`flops_fit.analysis` that reads files. Each row becomes a run record in
the shape ``runs/<id>.json`` has (status "completed", no history), ready for
:func:`flops_fit.analysis.run_analysis`. Rows without a budget get one inferred there by
grouping equal FLOP counts; ``flops`` defaults to 6 x params x tokens.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from flops_fit.errors import FlopsFitError
from flops_fit.law import SIX_ND

REQUIRED = ("params", "tokens", "loss")
OPTIONAL_NUMERIC = ("budget", "flops", "non_embedding_params", "unique_tokens")


def load_external(path) -> list[dict]:
    """Load run records from ``path`` (``.csv``, ``.jsonl`` or ``.json`` lines)."""
    p = Path(path)
    if not p.is_file():
        raise FlopsFitError(f"external runs file not found: {p} (pass analyze.input=<path to a CSV or JSONL>)")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        rows, columns = _read_csv(p)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        rows, columns = _read_jsonl(p)
    else:
        raise FlopsFitError(f"{p}: unknown file type {suffix!r}; use a .csv or .jsonl file with columns "
                            f"params, tokens, loss[, budget]")
    if not rows:
        raise FlopsFitError(f"{p}: no rows; expected columns params, tokens, loss[, budget]")
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise FlopsFitError(f"{p}: missing column(s) {', '.join(missing)}; expected params, tokens, loss[, budget] "
                            f"(found: {', '.join(sorted(columns)) or 'none'})")
    runs: list[dict] = []
    seen: dict[tuple, int] = {}
    ids: dict[str, int] = {}
    for i, row in enumerate(rows):
        line = i + 2 if suffix == ".csv" else i + 1
        rec = {"id": str(row.get("id") or f"ext{i:04d}"), "status": str(row.get("status") or "completed")}
        for key in REQUIRED:
            rec[key] = _number(row.get(key), p, line, key, required=True)
        for key in OPTIONAL_NUMERIC:
            if key in row and row[key] not in (None, ""):
                rec[key] = _number(row[key], p, line, key, required=False)
        if rec.get("flops") is None:
            rec["flops"] = SIX_ND * rec["params"] * rec["tokens"]  # the 6ND rule
        rec.setdefault("budget", None)
        rec["history"] = []
        rec["data_unit"] = str(row.get("data_unit") or "tokens")
        key = (rec["params"], rec["tokens"], rec["loss"])
        if key in seen:
            raise FlopsFitError(f"{p}: row {line} duplicates row {seen[key]} (params, tokens, loss all equal); "
                                f"remove the duplicate so that run is not counted twice")
        seen[key] = line
        if rec["id"] in ids:
            raise FlopsFitError(f"{p}: row {line} reuses the id {rec['id']!r} of row {ids[rec['id']]}; ids must be unique")
        ids[rec["id"]] = line
        runs.append(rec)
    return runs


def _number(value, path, line, key, *, required):
    if value is None or value == "":
        if required:
            raise FlopsFitError(f"{path}: row {line} has no value for {key!r}; every row needs params, tokens, loss")
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise FlopsFitError(f"{path}: row {line}, column {key!r}: {value!r} is not a number") from None
    if not math.isfinite(x):
        raise FlopsFitError(f"{path}: row {line}, column {key!r}: {value!r} is not a finite number; drop the row "
                            f"or fill in the value")
    if key != "loss" and not x > 0:
        raise FlopsFitError(f"{path}: row {line}, column {key!r}: {value!r} must be a positive number")
    return x


def _read_csv(p: Path):
    try:
        with p.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v.strip() if isinstance(v, str) else v) for k, v in r.items()}
                    for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise FlopsFitError(f"{p}: cannot read as CSV ({e})") from None
    return rows, set(columns)


def _read_jsonl(p: Path):
    rows = []
    columns: set[str] = set()
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FlopsFitError(f"{p}: cannot read ({e})") from None
    stripped = text.lstrip()
    if p.suffix.lower() == ".json" and stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise FlopsFitError(f"{p}: invalid JSON ({e.msg} at line {e.lineno})") from None
        items = list(enumerate(data, start=1))
    else:
        items = []
        for ln, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append((ln, json.loads(line)))
            except json.JSONDecodeError as e:
                raise FlopsFitError(f"{p}: line {ln} is not valid JSON ({e.msg}); one JSON object per line") from None
    for ln, obj in items:
        if not isinstance(obj, dict):
            raise FlopsFitError(f"{p}: line {ln} is not a JSON object; expected {{\"params\": .., \"tokens\": .., \"loss\": ..}}")
        rows.append(obj)
        columns.update(obj.keys())
    # a column is present only if every row has it (a missing key is reported per row otherwise)
    return rows, columns
