"""Numbers a test measured, kept per host so that scripts/test_summary.py can print them side by side
(``$INFU_REPORTS/measurements/<host>.jsonl``; nothing is written when the suite runs without reports)."""
from __future__ import annotations

import json
import os
from pathlib import Path


def record(name: str, value: float) -> None:
    """Keep one measured number (for example a relative error against the reference) under ``name``."""
    reports = os.environ.get("INFU_REPORTS")
    if not reports:
        return
    folder = Path(reports) / "measurements"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{os.environ.get('INFU_HOST_NAME', 'host')}.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"name": name, "value": float(value)}) + "\n")
