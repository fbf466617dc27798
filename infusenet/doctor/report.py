"""The doctor's reports: the inventory of every model file, one file on request, and what a loader would fail on.

The inventory lists the files of the catalogue (``infusenet.catalogue``: what the README's model table and the
shipped workflows name) plus any other InfuseNet or projection found in the InfiniteYou folders, each checked
(:mod:`.checks`) and, when missing or unusable, with its fix (:mod:`.fixes`).
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path

from .. import host
from ..catalogue import ANTELOPE_DIR, GROUP_TITLES, SPECS, SPECS_BY_KEY, ModelSpec
from .checks import (STATUS_BROKEN, STATUS_MISPLACED, STATUS_MISSING, STATUS_OK, STATUS_REFUSED, Check,
                     check_file)
from .fixes import file_entry, fix_for, missing_entry, problem_line, with_fix
from .places import (MODEL_FILE_SUFFIXES, MODEL_FOLDERS, UnsafePath, extra_files, folder_roots, locate,
                     model_file_ok, model_folder_ok, nested_antelope, role_for, safe_relative, shown_path, size_of)


def report_spec(spec: ModelSpec) -> dict:
    path = locate(spec)
    entry = {"key": spec.key, "title": spec.title, "role": spec.role, "group": spec.group, "need": spec.need,
             "expected": f"{spec.folders[0]}/{spec.name}", "found": None, "size": None, "note": spec.note}
    if path is None:
        check = Check(STATUS_MISSING, "not found in " + ", ".join(f"{f}/" for f in spec.folders))
        if spec.role in ("detector", "face_onnx"):
            nested = nested_antelope(folder_roots("insightface"), spec.name.rsplit("/", 1)[-1])
            if nested is not None:
                check = Check(STATUS_MISPLACED, f"found one folder too deep at {shown_path(nested)}")
                entry["found"] = shown_path(nested)
                entry["fix"] = {"what": f"Move the files up into {ANTELOPE_DIR}/", "folder": ANTELOPE_DIR + "/",
                                "shell": f"mv {shlex.quote(shown_path(nested.parent))}/* {ANTELOPE_DIR}/ && "
                                         f"rmdir {shlex.quote(shown_path(nested.parent))}",
                                "url": spec.url, "page": spec.page, "target": entry["expected"], "note": ""}
    else:
        check = check_file(path, spec.role)
        entry["found"] = shown_path(path)
        entry["size"] = size_of(path)
    entry.update(status=check.status, detail=check.detail, info=check.info)
    if check.status != STATUS_OK and "fix" not in entry:
        entry["fix"] = fix_for(spec, check.status, entry["found"])
    return entry


def inventory() -> dict:
    """Every file of the catalogue and every other InfuseNet/projection found, checked, with fixes."""
    entries = [report_spec(s) for s in SPECS]
    for path, role in extra_files():
        check = check_file(path, role)
        entry = {"key": "extra:" + shown_path(path), "title": ("InfuseNet" if role == "infusenet" else "Identity projection")
                 + " (found)", "role": role, "group": "extra", "need": "optional", "expected": shown_path(path),
                 "found": shown_path(path), "size": size_of(path), "note": "", "status": check.status,
                 "detail": check.detail, "info": check.info}
        if check.status == STATUS_REFUSED:
            entry["fix"] = {"what": f"Delete {entry['found']}: it could run code when loaded",
                            "shell": f"rm {shlex.quote(entry['found'])}", "folder": "", "url": "", "page": "",
                            "target": "", "note": ""}
        elif check.status != STATUS_OK:
            entry["fix"] = {"what": "Delete or replace this file; the official files are listed above",
                            "shell": "", "folder": "", "url": "", "page": "", "target": "", "note": ""}
        entries.append(entry)
    groups = []
    for group in dict.fromkeys(e["group"] for e in entries):
        members = [e for e in entries if e["group"] == group]
        need = "required" if any(e["need"] == "required" for e in members) else "optional"
        groups.append({"group": group, "title": GROUP_TITLES.get(group, group), "need": need,
                       "satisfied": any(e["status"] == STATUS_OK for e in members)})
    missing_required = [g["group"] for g in groups if g["need"] == "required" and not g["satisfied"]]
    fix_lines = []
    for g in missing_required:
        first = next(e for e in entries if e["group"] == g)
        line = first.get("fix", {}).get("shell")
        if line and line not in fix_lines:
            fix_lines.append(line)
    counts = {s: sum(e["status"] == s for e in entries) for s in
              (STATUS_OK, STATUS_MISSING, STATUS_BROKEN, STATUS_REFUSED, STATUS_MISPLACED)}
    return {"ready": not missing_required, "missing_groups": missing_required, "counts": counts,
            "run_in": "ComfyUI's models folder (the one holding diffusion_models/, vae/, text_encoders/)",
            "fix_all": " && ".join(fix_lines), "groups": groups, "entries": entries}


def check_one(name: str) -> dict:
    """The report for one path relative to the models folder (``infiniteyou/aes_stage2/x.safetensors``)."""
    name = safe_relative(name)
    for spec in SPECS:
        if name in {f"{f}/{spec.name}" for f in spec.folders}:
            return report_spec(spec)
    folder, _, rest = name.partition("/")
    if folder not in MODEL_FOLDERS or not rest:
        raise UnsafePath(f"'{folder}' is not one of the model folders the pack reads")
    for root in folder_roots(folder):
        path = root / rest
        if path.exists():
            if not (model_folder_ok(root, path) if path.is_dir() else model_file_ok(path)):
                return {"key": "file:" + name, "title": rest, "role": "", "group": "extra", "need": "optional",
                        "expected": name, "found": None, "size": None, "note": "", "status": STATUS_REFUSED,
                        "detail": "not a model file (the pack reads only " + ", ".join(MODEL_FILE_SUFFIXES) +
                                  " files); nothing is reported about it", "info": {}}
            role = role_for(rest)
            check = check_file(path, role)
            return {"key": "file:" + name, "title": rest, "role": role, "group": "extra", "need": "optional",
                    "expected": name, "found": shown_path(path), "size": size_of(path), "note": "",
                    "status": check.status, "detail": check.detail, "info": check.info}
    return {"key": "file:" + name, "title": rest, "role": role_for(rest), "group": "extra", "need": "optional",
            "expected": name, "found": None, "size": None, "note": "", "status": STATUS_MISSING, "detail": "not found",
            "info": {}}


def spec_for(role: str, name: str | None) -> ModelSpec | None:
    return next((s for s in SPECS if s.role == role and name == s.name), None)


def infusenet_problems(infusenet_path: Path | None, infusenet_name: str, projection_path: Path | None,
                       projection_name: str | None) -> list[str]:
    """Problems with the files an InfuseNet Loader would read: ``*_name`` as the node shows them (relative to
    the InfiniteYou folders); ``projection_name`` None means "auto" (``image_proj_model.bin`` beside it)."""
    problems = []
    spec = spec_for("infusenet", infusenet_name)
    if infusenet_path is None or not infusenet_path.exists():
        problems.append(problem_line(missing_entry(spec.title if spec else "InfuseNet", f"infiniteyou/{infusenet_name}", spec)))
    else:
        check = check_file(infusenet_path, "infusenet")
        if check.status != STATUS_OK:
            problems.append(problem_line(with_fix(file_entry(infusenet_path, infusenet_name, "infusenet", check), spec)))
        elif check.info.get("base") == "flux2":
            problems += flux2_host_problems(infusenet_name)
    if projection_name is None:
        low = infusenet_name.lower()
        folder = os.path.dirname(infusenet_name)  # beside the file, or beside the InfuseNetModel folder
        target = "infiniteyou/" + (folder + "/" if folder else "") + "image_proj_model.bin"
        pspec = spec_for("projection", target.removeprefix("infiniteyou/")) or SPECS_BY_KEY[
            "projection_sim" if "sim" in low else "projection_aes"]
        detail = f"no image_proj_model.bin beside {infusenet_name}"
    else:
        pspec = spec_for("projection", projection_name)
        target, detail = f"infiniteyou/{projection_name}", "not found"
    if projection_path is None or not projection_path.exists():
        problems.append(problem_line(missing_entry(pspec.title if pspec else "Identity projection", target, pspec, detail)))
    else:
        check = check_file(projection_path, "projection")
        if check.status != STATUS_OK:
            entry = file_entry(projection_path, projection_name or "image_proj_model.bin", "projection", check)
            problems.append(problem_line(with_fix(entry, pspec)))
    return problems


def flux2_host_problems(infusenet_name: str) -> list[str]:
    """A FLUX.2 InfuseNet on a ComfyUI that cannot load FLUX.2 [klein]: refused when the prompt is queued, before
    any model loads, with the running version (UNETLoader would otherwise fail on the base without saying why)."""
    lacks = host.flux2_klein_lacks()
    if lacks is None:
        return []
    return [f"{infusenet_name}: a FLUX.2 [klein] InfuseNet, and {host.host_label()} cannot load FLUX.2 [klein] (it "
            f"lacks {lacks}). Fix: update ComfyUI (0.30.0 runs it), or choose a FLUX.1 InfuseNet."]


def face_problems(pack_dir: Path, arcface_path: Path) -> list[str]:
    """Problems with the antelopev2 detector and the ArcFace file a Face Encoder Loader would read."""
    problems = []
    detector_spec = SPECS_BY_KEY["antelopev2/scrfd_10g_bnkps.onnx"]
    detector = pack_dir / "scrfd_10g_bnkps.onnx"
    if not detector.is_file():
        nested = next((n for n in (pack_dir / pack_dir.name / detector.name, pack_dir / "antelopev2" / detector.name)
                       if n.is_file()), None)
        entry = file_entry(None, shown_path(detector), "detector")
        entry["title"] = detector_spec.title
        if nested is not None:
            entry.update(status=STATUS_MISPLACED, detail=f"found one folder too deep at {shown_path(nested)}")
            entry["fix"] = {"what": f"Move the files up into {shown_path(pack_dir)}/",
                            "shell": f"mv {shlex.quote(shown_path(nested.parent))}/* {shlex.quote(shown_path(pack_dir))}/"
                                     f" && rmdir {shlex.quote(shown_path(nested.parent))}"}
        else:
            entry["fix"] = fix_for(detector_spec)
        problems.append(problem_line(entry))
    else:
        check = check_file(detector, "detector")
        if check.status != STATUS_OK:
            problems.append(problem_line(with_fix(file_entry(detector, shown_path(detector), "detector", check),
                                                   detector_spec)))
    arc_spec = SPECS_BY_KEY["arcface"]
    if not arcface_path.is_file():
        entry = file_entry(None, arcface_path.name, "arcface")
        entry.update(title=arc_spec.title, fix=fix_for(arc_spec))
        problems.append(problem_line(entry))
    else:
        check = check_file(arcface_path, "arcface")
        if check.status != STATUS_OK:
            problems.append(problem_line(with_fix(file_entry(arcface_path, arcface_path.name, "arcface", check), arc_spec)))
    return problems


def infusenet_loader_problems(infusenet_name: str, projection_name: str | None) -> list[str]:
    """What an InfuseNet Loader with these choices would fail on (``projection_name`` None: auto)."""
    from ..paths import resolve_model_path
    from ..weights import find_projection_file

    def resolve(name: str) -> Path | None:
        try:
            return Path(resolve_model_path(name))
        except FileNotFoundError:
            return None

    path = resolve(infusenet_name)
    if projection_name is None:
        projection = find_projection_file(str(path)) if path is not None else None
        if projection is None and path is None:
            folder = os.path.dirname(infusenet_name)  # beside the file, or beside the InfuseNetModel folder
            projection = resolve((folder + "/" if folder else "") + "image_proj_model.bin")
        projection_path = Path(projection) if projection else None
    else:
        projection_path = resolve(projection_name)
    return infusenet_problems(path, infusenet_name, projection_path, projection_name)


def face_loader_problems(pack_name: str, arcface_name: str) -> list[str]:
    """What a Face Encoder Loader with these choices would fail on."""
    from ..face.paths import insightface_roots, resolve_arcface_path

    roots = insightface_roots()
    pack_dir = next((r / "models" / pack_name for r in roots if (r / "models" / pack_name).is_dir()),
                    roots[0] / "models" / pack_name)
    arcface_path, _ = resolve_arcface_path(arcface_name)
    return face_problems(pack_dir, Path(arcface_path))


def validation_message(problems: list[str], node: str) -> str | bool:
    """True, or one message naming the node and listing every problem (numbered), for ``validate_inputs``."""
    if not problems:
        return True
    lines = "\n".join(f"{i + 1}. {p}" for i, p in enumerate(problems))
    return (f"{node}: {len(problems)} model file{'s' if len(problems) > 1 else ''} cannot be used (InfiniteYou model "
            f"doctor: right-click the node, or GET /infiniteyou/models):\n{lines}")
