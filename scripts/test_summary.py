"""Summary of a scripts/test.sh run: per-host counts, skip reasons, tests left to the newest host, hosts not tested.

Reads ``<reports>/<host>.xml`` (pytest JUnit XML), ``<host>.rc``, ``<host>.seconds``, ``<host>.unavailable`` and
``<host>.newest-only.json`` (tests/host_features.py), and ``<host>.second.{xml,rc,seconds}`` where the newest
host's tests ran in two processes (scripts/test.sh, side by side; tests/host_features.py); exits non-zero when any
host failed, ran no test, or could not be set up.
The last line is the total: ``N passed, N failed``.
"""
from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def counts(xml: Path) -> tuple[dict[str, int], list[str]]:
    out = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    skips: list[str] = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None:
            out["failed"] += 1
        elif case.find("error") is not None:
            out["errors"] += 1
        elif (skip := case.find("skipped")) is not None:
            out["skipped"] += 1
            skips.append(f"{name}: {skip.get('message', '')}")
        else:
            out["passed"] += 1
    return out, skips


def compare_outputs(outputs: Path) -> None:
    """Each shipped workflow's image on every host (same seed, same models), compared pixel by pixel."""
    hosts = sorted(p for p in outputs.iterdir() if p.is_dir()) if outputs.is_dir() else []
    if len(hosts) < 2:
        return
    import numpy as np
    from PIL import Image

    first, *others = hosts
    print(f"workflow outputs, {first.name} against {', '.join(h.name for h in others)} (pixel values 0-255):")
    for image in sorted(first.glob("*.png")):
        a = np.asarray(Image.open(image), dtype=np.float64)
        for other in others:
            if not (other / image.name).exists():
                narrow = sorted(p.name for p in other.glob(f"{image.stem}.w*.png"))
                print(f"    {image.stem}: " + (f"run on a narrow FLUX.1 on {other.name} ({narrow[0]}), not compared"
                                               if narrow else f"no output on {other.name}"))
                continue
            b = np.asarray(Image.open(other / image.name), dtype=np.float64)
            if a.shape != b.shape:
                print(f"    {image.stem}: sizes differ, {a.shape} against {b.shape}")
                continue
            diff = np.abs(a - b)
            print(f"    {image.stem} vs {other.name}: mean |difference| {diff.mean():.3f}, max {diff.max():.0f}, "
                  f"identical pixels {100 * (diff == 0).mean():.1f}%")


def host_independent_lines(report: Path, others_left: bool = True) -> list[str]:
    """What a host left to the newest host, per test module; for the newest host, what it ran for every host
    (only when ``others_left``: another host of the run left tests to it)."""
    if not report.exists():
        return []
    data = json.loads(report.read_text())
    modules = data.get("modules", {})
    if not modules or not (data.get("left_to_newest") or others_left):
        return []
    count = sum(modules.values())
    if data.get("left_to_newest"):
        head = f"left to the newest host (ComfyUI {data['newest']}), the same on every host: {count} tests"
    else:
        head = f"run here once for every host (the same on every host): {count} tests"
    return [head] + [f"    {module}: {n}" for module, n in modules.items()]


def print_measurements(folder: Path) -> None:
    """Numbers the tests measured (tests/measurements.py), one line per measurement, hosts side by side."""
    if not folder.is_dir():
        return
    table: dict[str, dict[str, list[float]]] = {}
    hosts = sorted(p.stem for p in folder.glob("*.jsonl"))
    for host in hosts:
        for line in (folder / f"{host}.jsonl").read_text().splitlines():
            item = json.loads(line)
            table.setdefault(item["name"], {}).setdefault(host, []).append(item["value"])
    print("measured on each host (" + " | ".join(hosts) + "):")
    for name in sorted(table):
        cells = [", ".join(f"{v:.2e}" for v in table[name].get(h, [])) or "-" for h in hosts]
        print(f"    {name}: " + " | ".join(cells))


def exit_code(reports: Path, name: str) -> int:
    return int((reports / f"{name}.rc").read_text().strip() or 1)


def main(reports: Path) -> int:
    ok = True
    total = {"passed": 0, "failed": 0}
    print("\n======== InfiniteYou test summary, per ComfyUI host ========")
    names = sorted({p.stem for p in reports.iterdir() if p.suffix in (".xml", ".unavailable", ".rc")
                    and not p.stem.endswith(".second")})
    others_left = any(json.loads(p.read_text()).get("left_to_newest") for p in reports.glob("*.newest-only.json"))
    for name in names:
        unavailable = reports / f"{name}.unavailable"
        xml = reports / f"{name}.xml"
        if unavailable.exists():
            print(f"- {name}: {unavailable.read_text().strip()}")
            ok = ok and not (reports / f"{name}.rc").exists()  # a failed setup fails the run
            continue
        if not xml.exists():
            print(f"- ComfyUI {name}: pytest wrote no report (exit code {(reports / f'{name}.rc').read_text().strip()}).")
            ok = False
            continue
        c, skips = counts(xml)
        rc = exit_code(reports, name)
        seconds = (reports / f"{name}.seconds").read_text().strip() if (reports / f"{name}.seconds").exists() else "?"
        part = f"{name}.second"
        if (reports / f"{part}.rc").exists():  # the host's second process (host-independent and listed modules)
            if not (reports / f"{part}.xml").exists():
                print(f"- ComfyUI {name}: its second process wrote no report (exit code {exit_code(reports, part)}).")
                ok = False
                continue
            c_part, skips_part = counts(reports / f"{part}.xml")
            rc_part = exit_code(reports, part)
            ok = ok and (rc_part == 0 or (rc_part == 5 and sum(c_part.values()) == 0))  # 5: -k left none
            seconds_part = (reports / f"{part}.seconds").read_text().strip()
            second = (f"; of these, {sum(c_part.values())} tests (the host-independent ones and the modules "
                      f"tests/host_features.py names) ran in a second process in {seconds_part} s (pytest exit {rc_part})")
            c = {key: c[key] + c_part[key] for key in c}
            skips += skips_part
        else:
            second = ""
        print(f"- ComfyUI {name}: {c['passed']} passed, {c['failed']} failed, {c['errors']} errors, "
              f"{c['skipped']} skipped in {seconds} s (pytest exit {rc}){second}")
        for s in skips:
            print(f"    skipped: {s}")
        for line in host_independent_lines(reports / f"{name}.newest-only.json", others_left):
            print(f"    {line}")
        total["passed"] += c["passed"]
        total["failed"] += c["failed"] + c["errors"]
        if rc != 0 or c["passed"] == 0:
            ok = False
    print_measurements(reports / "measurements")
    compare_outputs(reports / "outputs")
    seconds = (reports / "total.seconds").read_text().strip() if (reports / "total.seconds").exists() else "?"
    print(f"whole run: {seconds} s")
    if not names:
        print("no host was tested")
        ok = False
    print(f"{total['passed']} passed, {total['failed']} failed")
    return 0 if ok and total["passed"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
