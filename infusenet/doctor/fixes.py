"""How to fix a missing or unusable model file: its link, its folder, and one shell line run in ComfyUI's models folder.

Also the one-line form of a problem that the loaders' validation shows (:func:`problem_line`).
"""
from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

from ..catalogue import ANTELOPE_DIR, ModelSpec
from .checks import STATUS_BROKEN, STATUS_MISSING, STATUS_REFUSED, Check
from .places import shown_path

GATED_NOTE = ("gated on Hugging Face: accept the licence on the model page, create a token, then "
              "`export HF_TOKEN=...` before running the line")


def fix_for(spec: ModelSpec, status: str = STATUS_MISSING, found: str | None = None) -> dict:
    target = f"{spec.folders[0]}/{spec.name}"
    folder = target.rsplit("/", 1)[0]
    if spec.trained_by_you:
        shell = f"rm -r {shlex.quote(found)}" if status == STATUS_REFUSED and found else ""
        what = f"No download exists: train it (README, FLUX.2 [klein]: train your own InfuseNet) and export it into {folder}/"
        return {"url": "", "page": "", "folder": folder + "/", "target": target, "shell": shell, "what": what,
                "note": spec.note}
    if spec.is_folder:  # config.json, the index and every shard: the page lists them
        what = (f"Download every file of {spec.name.rsplit('/', 1)[-1]}/ (config.json, the index and its shards) from "
                f"{spec.url} into {target}/")
        return {"url": spec.url, "page": spec.page, "folder": target + "/", "target": target, "shell": "",
                "what": ("Replace it: " + what[0].lower() + what[1:]) if status == STATUS_BROKEN else what,
                "note": spec.note}
    auth = '-H "Authorization: Bearer $HF_TOKEN" ' if spec.gated else ""
    if spec.archive:
        zip_path = "insightface/models/antelopev2.zip"
        shell = (f"mkdir -p {ANTELOPE_DIR} && curl -L --fail -o {zip_path} {spec.archive} && "
                 f"unzip -o -j {zip_path} '*.onnx' -d {ANTELOPE_DIR} && rm {zip_path}")
        what = f"Download antelopev2.zip and unzip its .onnx files directly into {ANTELOPE_DIR}/"
    else:
        shell = f"mkdir -p {shlex.quote(folder)} && curl -L --fail {auth}-o {shlex.quote(target)} {spec.url}"
        what = f"Download {spec.name.rsplit('/', 1)[-1]} into {folder}/"
    if status == STATUS_REFUSED and found:
        shell = f"rm {shlex.quote(found)} && " + shell
        what = f"Delete {found} (it could run code) and download the official file into {folder}/"
    elif status == STATUS_BROKEN:
        what = "Replace it: " + what[0].lower() + what[1:]
    return {"url": spec.url, "page": spec.page, "folder": folder + "/", "target": target, "shell": shell,
            "what": what, "note": GATED_NOTE if spec.gated else spec.note}


def problem_line(entry: dict) -> str:
    fix = entry.get("fix") or {}
    where = entry.get("found") or entry["expected"]
    text = f"{entry['title']}: {entry['status']} ({where}: {entry['detail']})."
    if fix.get("what"):
        text += f" Fix: {fix['what']}"
        if fix.get("url"):
            text += f" from {fix['url']}"
        text += "."
    if fix.get("shell"):
        text += f" In ComfyUI/models run: {fix['shell']}"
    return text


def missing_entry(title: str, target: str, spec: ModelSpec | None, detail: str = "not found") -> dict:
    """A missing-file entry whose fix puts ``spec``'s official file at ``target`` (relative to models/)."""
    entry = {"title": title, "expected": target, "found": None, "status": STATUS_MISSING, "detail": detail}
    if spec is not None:
        placed = dataclasses.replace(spec, folders=(target.split("/", 1)[0],), name=target.split("/", 1)[1])
        entry["fix"] = fix_for(placed)
    else:
        entry["fix"] = {"what": "choose another file in the node, or download the official one (see the model doctor)"}
    return entry


def file_entry(path: Path | None, name: str, role: str, check: Check | None = None) -> dict:
    check = check or Check(STATUS_MISSING, "not found")
    return {"title": name, "role": role, "expected": name, "found": shown_path(path) if path else None,
            "status": check.status, "detail": check.detail, "info": check.info}


def with_fix(entry: dict, spec: ModelSpec | None) -> dict:
    if spec is not None:
        entry["fix"] = fix_for(spec, entry["status"], entry.get("found"))
        entry["title"] = spec.title
    elif entry["status"] == STATUS_REFUSED:
        entry["fix"] = {"what": f"Delete {entry['found']}; use the official image_proj_model.bin", "shell":
                        f"rm {shlex.quote(entry['found'])}"}
    else:
        entry["fix"] = {"what": "choose another file, or download the official one (see the model doctor)"}
    return entry
