"""The boundary: every ComfyUI internal the pack uses is in ``host.CONTRACT``, and the contract checks what breaks.

* nothing but ``infusenet/host.py`` imports ComfyUI internals;
* every attribute the pack's code reads on a ComfyUI object, and every ``transformer_options`` key it reads, is a
  contract entry (found by reading the pack's source, against the names ComfyUI's classes define);
* a real sampling run hands a DIFFUSION_MODEL wrapper what the contract says, in the order it says, and the pack's
  wrapper takes it in that order;
* a scratch copy of this ComfyUI with one internal changed (a method renamed, a parameter renamed behind
  ``**kwargs``, positional parameters swapped, an attribute renamed, a transformer_options key renamed) makes the
  check fail naming that symbol and the ComfyUI version.
"""
from __future__ import annotations

import ast
import inspect
import json
import pathlib
import re
import shutil
import subprocess
import sys

import torch

from devtools.comfy_env import PACK_ROOT, comfyui_dir, comfyui_version
from infusenet import host

PACK_SOURCES = [p for p in [*(PACK_ROOT / "infusenet").rglob("*.py"), *(PACK_ROOT / "nodes").rglob("*.py")]
                if p != PACK_ROOT / "infusenet" / "host.py"]
RECEIVED = ("comfy.sd.CLIP", "comfy.sd.VAE", "comfy.model_patcher.ModelPatcher", "comfy.model_base.BaseModel",
            "comfy.model_sampling.ModelSamplingFlux", "comfy.model_sampling.CONST", "comfy.samplers.CFGGuider",
            "comfy.patcher_extension.WrapperExecutor", "comfy.latent_formats.LatentFormat", "comfy.ldm.flux.model.Flux")
"""ComfyUI classes whose instances the pack is handed (node inputs MODEL, CLIP, VAE and what they hold, the sampler's
guider and wrapper executor), whether or not the contract names them yet."""


def test_every_internal_symbol_the_pack_uses_is_in_place():
    assert host.check_contract() == [], f"on ComfyUI {host.comfy_version()}"


def test_a_class_source_read_from_the_parsed_file_is_what_inspect_reads():
    """The check reads a class's source from its file's syntax tree, parsed once (a server start pays for each
    module once, not once per class): the same text ``inspect.getsource`` gives, for every ComfyUI class the
    contract names and its bases, nested and local classes included."""
    classes = {k for c in host.CONTRACT if host._exists(c.path) and inspect.isclass(obj := host._resolve(c.path))
               for k in obj.__mro__[:-1] if k.__module__.split(".")[0] in ("comfy", "comfy_api", "comfy_extras")}

    class Outer:
        class Inner:
            def __init__(self):
                self.seen = 1

    def make():
        class Local:
            value = 2
        return Local

    assert len(classes) >= 8
    for cls in [*classes, Outer, Outer.Inner, make()]:
        assert host._class_source(cls) == inspect.getsource(cls), cls.__qualname__
    assert host._class_source(int) is None and host._source(int) == ""


def test_no_module_but_host_imports_comfy_internals():
    """Everything outside infusenet/host.py reaches ComfyUI through it or comfy_api."""
    offenders = []
    for path in [*PACK_SOURCES, PACK_ROOT / "__init__.py"]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"^\s*(import|from)\s+(comfy(\.|\s)|comfy_extras|folder_paths|server|nodes\b|execution|node_helpers)", code):
                offenders.append(f"{path.relative_to(PACK_ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


# ---------------------------------------------------------------- attributes and keys the pack's code reads
def _classes_of(path: str) -> list[type]:
    """The class a contract path names, or the class that holds the method or attribute it names."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = host._resolve(".".join(parts[:i]))
        except Exception:
            return []
        if inspect.isclass(obj):
            return [obj]
    return []


def _source(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def comfy_attribute_names() -> dict[str, set[str]]:
    """name -> ComfyUI classes defining it (class attributes, methods, ``self.<name> =``), for the classes the contract
    names and :data:`RECEIVED`; names every torch module, tensor, dict or path has are left out."""
    generic = set()
    for thing in (object, dict, pathlib.Path, torch.Tensor, torch.nn.Module, torch.nn.Linear(1, 1)):
        generic |= set(dir(thing))
    classes = [c for contact in host.CONTRACT for c in _classes_of(contact.path)] + [host._resolve(p) for p in RECEIVED]
    names: dict[str, set[str]] = {}
    for cls in classes:
        for k in cls.__mro__:
            if not k.__module__.startswith("comfy"):
                continue
            own = set(vars(k)) | set(re.findall(r"\bself\.(\w+)\s*(?::[^=\n]+)?=(?!=)", _source(k)))
            for name in own - generic:
                if not name.startswith("__"):
                    names.setdefault(name, set()).add(f"{cls.__module__}.{cls.__qualname__}")
    return names


def pack_defined_names() -> set[str]:
    """Attribute names the pack's own classes define (their reads cannot be told from reads on ComfyUI objects)."""
    names = set()
    for path in PACK_SOURCES + list((PACK_ROOT / "devtools").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        names.add(item.name)
                    elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        names.add(item.target.id)
                    elif isinstance(item, ast.Assign):
                        names |= {t.id for t in item.targets if isinstance(t, ast.Name)}
            elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                  and isinstance(node.value, ast.Name) and node.value.id == "self"):
                names.add(node.attr)
    return names


def attribute_reads() -> dict[str, list[str]]:
    """name -> where the pack's code (outside host.py) reads ``<object>.<name>``, modules and ``host`` left out."""
    reads: dict[str, list[str]] = {}
    for path in PACK_SOURCES:
        tree = ast.parse(path.read_text())
        modules = {"host"}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules |= {(a.asname or a.name).split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                modules |= {a.asname or a.name for a in node.names}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and not (isinstance(node.value, ast.Name) and node.value.id in modules):
                reads.setdefault(node.attr, []).append(f"{path.relative_to(PACK_ROOT)}:{node.lineno}")
    return reads


def contract_names() -> set[str]:
    names = set()
    for c in host.CONTRACT:
        names.add(c.path.rsplit(".", 1)[-1])
        names |= set(getattr(c, "attributes", ())) | set(c.fields)
    return names


def test_every_comfyui_attribute_the_pack_reads_is_in_the_contract():
    comfy_names, reads, covered = comfy_attribute_names(), attribute_reads(), contract_names()
    own = pack_defined_names()
    unlisted = {name: (sorted(comfy_names[name]), reads[name][:3]) for name in set(reads) & set(comfy_names)
                if name not in covered and name not in own}
    assert not unlisted, "ComfyUI attributes read outside host.py without a Contact in host.CONTRACT:\n" + "\n".join(
        f"  .{name} (defined by {cls}) at {where}" for name, (cls, where) in sorted(unlisted.items()))
    # the names the brief of the boundary calls out are there by name, whatever the pack defines itself
    for name in ("pe_embedder", "patch_size", "double_blocks", "single_blocks", "calculate_input", "timestep",
                 "noise_scaling", "tokenize", "encode_from_tokens", "model_sampling", "latent_format", "class_obj"):
        assert name in covered, name


def test_every_transformer_options_key_the_pack_reads_is_in_the_contract():
    read = set()
    for path in PACK_SOURCES:
        read |= set(re.findall(r"transformer_options(?:\.get\(|\[)\s*[\"'](\w+)[\"']", path.read_text()))
    assert read, "the pack reads transformer_options keys (patch.py): the scan found none"
    assert read <= set(host.TRANSFORMER_OPTIONS_READ), sorted(read - set(host.TRANSFORMER_OPTIONS_READ))
    checked = {k for c in host.CONTRACT for k in c.keys}
    assert set(host.TRANSFORMER_OPTIONS_READ) <= checked
    hard_coded = [f"{p.relative_to(PACK_ROOT)}" for p in PACK_SOURCES if re.search(r"[\"']multigpu[\"']", p.read_text())]
    assert not hard_coded, f"ComfyUI's multi-GPU key outside host.py (use host.MULTIGPU_KEY): {hard_coded}"


# ---------------------------------------------------------------- what a real sampling run passes
def test_a_real_sampling_run_passes_what_the_contract_says():
    """One euler step of ComfyUI's own sampler on a tiny FLUX: the DIFFUSION_MODEL wrapper gets the arguments in the
    order of ``host.FLUX_FORWARD_ARGS`` and a transformer_options holding every key the pack reads."""
    from devtools import flux_pair as fp
    from infusenet.patch import InfiniteYouPatch

    base = fp.make_base(1, 1)
    patcher = base.patcher.clone()
    seen = []

    def record(executor, *args, **kwargs):
        seen.append((args, dict(args[host.FLUX_FORWARD_ARGS.index("transformer_options")])))
        return executor(*args, **kwargs)

    host.add_wrapper(patcher, host.WrappersMP.DIFFUSION_MODEL, "contract-test", record)
    g = torch.Generator().manual_seed(0)
    noise, context = torch.randn(1, 16, 4, 4, generator=g), torch.randn(1, 5, fp.TEXT_DIM, generator=g)
    _, sigmas = fp.comfy_sample(patcher, noise, 1, fp.conds(context, torch.randn(1, fp.POOLED_DIM, generator=g), 3.5),
                                None, 1.0)
    assert len(seen) == 1
    args, options = seen[0]
    by_name = dict(zip(host.FLUX_FORWARD_ARGS, args))
    assert len(args) == len(host.FLUX_FORWARD_ARGS)
    assert by_name["x"].shape == (1, 16, 4, 4) and by_name["timestep"].shape == (1,)
    assert by_name["context"].shape == (1, 5, fp.TEXT_DIM) and by_name["y"].shape == (1, fp.POOLED_DIM)
    assert set(host.TRANSFORMER_OPTIONS_READ) <= set(options), sorted(options)
    assert options["cond_or_uncond"] == [0]
    assert torch.equal(options["sample_sigmas"].cpu(), sigmas) and float(options["sigmas"][0]) == float(sigmas[0])
    wrapper = list(inspect.signature(InfiniteYouPatch.diffusion_model).parameters)
    assert wrapper[2:2 + len(host.FLUX_FORWARD_ARGS)] == list(host.FLUX_FORWARD_ARGS), wrapper


# ---------------------------------------------------------------- a changed ComfyUI is named
CHANGES = [
    # (file in the host, text, replacement, every occurrence?, what the check must report)
    ("comfy/model_patcher.py", "def add_wrapper_with_key(", "def add_wrapper_keyed(", False,
     "comfy.model_patcher.ModelPatcher.add_wrapper_with_key: missing"),
    ("comfy/model_management.py",
     "def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None, force_full_load=False",
     "def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None, full_load=False",
     False, "comfy.model_management.load_models_gpu: does not take ['force_full_load']"),
    # a renamed parameter behind **kwargs: every name "passed" before; the order the wrapper relies on is checked now
    ("comfy/ldm/flux/model.py", "def _forward(self, x, timestep, context, y=None, guidance=None, ref_latents=None,",
     "def _forward(self, x, timestep, context, y=None, guidance=None, reference_latents=None,", False,
     "comfy.ldm.flux.model.Flux._forward: takes its first positional parameters as (x, timestep, context, y, guidance, "
     "reference_latents, control, transformer_options)"),
    ("comfy/ldm/flux/model.py", "def forward(self, x, timestep, context, y=None, guidance=None, ref_latents=None, control=None,",
     "def forward(self, x, timestep, context, y=None, guidance=None, control=None, ref_latents=None,", False,
     "comfy.ldm.flux.model.Flux.forward: takes its first positional parameters as (x, timestep, context, y, guidance, "
     "control, ref_latents, transformer_options)"),
    ("comfy/ldm/flux/model.py", "self.pe_embedder = ", "self.pos_embedder = ", False,
     "comfy.ldm.flux.model.Flux: instances have no attributes ['pe_embedder']"),
    ("comfy/samplers.py", '"sample_sigmas"', '"schedule_sigmas"', True,
     "comfy.samplers: no longer sets the keys ['sample_sigmas']"),
]


def test_changed_internals_are_named_with_the_comfyui_version(tmp_path):
    """All changes at once in one scratch copy: the check reports each, and nothing else."""
    scratch = tmp_path / "ComfyUI"
    top_level_data = {"user", "output", "input", "models", "custom_nodes", "temp", "tests", "tests-unit"}
    shutil.copytree(comfyui_dir(), scratch, ignore=lambda folder, names: [
        n for n in names if n == "__pycache__" or (folder == str(comfyui_dir()) and n in top_level_data)])
    for file, old, new, every, _ in CHANGES:
        source = (scratch / file).read_text()
        assert old in source, f"{file} of ComfyUI {comfyui_version()} no longer has {old!r}: update this test"
        (scratch / file).write_text(source.replace(old, new) if every else source.replace(old, new, 1))
    code = (
        "import json, sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
        "import comfy.cli_args; comfy.cli_args.args.cpu = True\n"
        "from infusenet import host\n"
        "print('CONTRACT=' + json.dumps(host.check_contract()))\n"
    )
    run = subprocess.run([sys.executable, "-c", code, str(scratch), str(PACK_ROOT)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    line = next((x for x in run.stdout.splitlines() if x.startswith("CONTRACT=")), None)
    assert line is not None, run.stdout[-2000:] + run.stderr[-4000:]
    problems = json.loads(line[len("CONTRACT="):])
    assert len(problems) == len(CHANGES), "\n".join(problems)
    for *_, expected in CHANGES:
        found = [p for p in problems if p.startswith(expected)]
        assert len(found) == 1, (expected, problems)
        assert f"ComfyUI {comfyui_version()}" in found[0], found[0]
