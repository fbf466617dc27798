"""Apply InfiniteYou: add InfuseNet residuals to a ComfyUI FLUX model through its public wrapper API.

Per model call (DIFFUSION_MODEL wrapper) the branch runs once on the chunks that get residuals
(``transformer_options["cond_or_uncond"]``: 0 = positive, 1 = negative), from the same packed
noisy latent, image ids, timestep and pooled text the base model gets, with the identity tokens as
its text (zero text ids) and the packed control latent. Its N double / M single residuals, times
strength (and an optional mask), are mapped onto the base blocks (``i // ceil(n_double/N)``,
``j // ceil(n_single/M)``) and summed into the ``control`` dict that ComfyUI's FLUX forward adds
after each block: ComfyUI ControlNets and further Apply InfiniteYou patches compose by summing.

An InfuseNet serves the base family it was made for (``InfuseNetBundle.base``): FLUX.1, or FLUX.2 [klein]
(ComfyUI's same ``Flux`` class with global modulation). The path is the same for both; a FLUX.2 branch reads
no pooled text (FLUX.2 has none) and its image and control tokens are the 128-channel latent at patch size 1.
Both add to the noisy latent's tokens only, so reference images (Kontext's, FLUX.2's multi-reference editing),
which ComfyUI appends after them, get no residual.

Three wrappers per patch: OUTER_SAMPLE makes the sampling run's state (:class:`RunState`, in the run's own copy of
the model options, so a run nested in another has its own and nothing outlives the run); APPLY_MODEL decides,
before the diffusion model runs, whether this call gets residuals (the step window, once per step) and for which
rows (:class:`CallPlan`) where ``TorchCompileModel`` compiles the diffusion model; DIFFUSION_MODEL (innermost, so
that a cache wrapper skipping the model skips the branch too) runs the branch and adds its residuals (and makes
the plan itself in an eager run). Compiled, the diffusion model and its DIFFUSION_MODEL wrappers are one graph:
the plan comes in as a guarded keyword argument, nothing there reads a host value, and the InfuseNet is one op of
the graph, compiled on its own (:class:`Branch`).
"""
from __future__ import annotations

import itertools
import logging
import math
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import host
from .weights import BASE_NAMES, InfiniteYouError, InfuseNetBundle

ADDITIONAL_MODELS_KEY = "infiniteyou"
WRAPPER_PREFIX = "infiniteyou_"
Window = Literal["steps", "sigma"]
ApplyTo = Literal["positive", "both"]


def flux_diffusion_model(model: "host.ModelPatcher", base: str = "flux1") -> "host.Flux":
    """The diffusion model inside ``model`` when it is of the family ``base`` ("flux1", "flux2") that an InfuseNet
    was made for; InfiniteYouError for anything else."""
    dm = host.flux_diffusion_model(model)
    name = type(getattr(model, "model", model)).__name__
    if dm is None:
        dm = getattr(getattr(model, "model", None), "diffusion_model", None)
        network = type(dm).__name__
        raise InfiniteYouError(not_served(model, name if network == name else f"{name}, network {network}", base))
    detail = f"{name}, rotary axes {list(dm.params.axes_dim)}"
    family = flux_family(dm)
    if family is None:
        raise InfiniteYouError(not_served(model, detail, base))
    if family != base:
        raise InfiniteYouError(other_family(model, detail, base))
    return dm


def flux_family(dm: "host.Flux") -> str | None:
    """Which InfuseNet family a ComfyUI ``Flux`` serves: "flux2" (global modulation), "flux1" (three rotary axes and
    a pooled text input), None for other models built on the same class."""
    if host.is_flux2(dm):
        return "flux2"
    if len(dm.params.axes_dim) == 3 and getattr(dm, "vector_in", None) is not None:
        return "flux1"
    return None


FAMILY_NAMES = {"flux": "FLUX.1", "flux2": "FLUX.2", "chroma": "Chroma", "chroma_radiance": "Chroma Radiance",
                "hidream": "HiDream", "sd3": "Stable Diffusion 3", "qwen_image": "Qwen-Image", "lumina2": "Lumina 2"}
SERVED = {"flux1": "FLUX.1 dev, schnell, Fill, Kontext and their fine-tunes (bf16, fp8 or GGUF)",
          "flux2": "the FLUX.2 [klein] size it was trained on (4B or 9B) and its fine-tunes"}
"""What an InfuseNet made for each family serves."""
BASE_WIDTHS = {"flux1": "FLUX.1 has 3072", "flux2": "FLUX.2 [klein] 4B has 3072, klein 9B 4096"}


def not_served(model, detail: str, base: str = "flux1") -> str:
    """Why Apply InfiniteYou refuses ``model``: which family it is and what the InfuseNet (made for ``base``) serves."""
    family = host.model_family(model)
    what = FAMILY_NAMES.get(family, family)
    made = BASE_NAMES[base]
    return (f"InfiniteYou needs a {made} model; this one is {what} ({detail}). The InfuseNet was trained for "
            f"{made}'s blocks and serves {SERVED[base]}: load one of those.")


def other_family(model, detail: str, base: str) -> str:
    """Why an InfuseNet made for one FLUX family is refused on a model of the other: which base each was made for."""
    family = host.model_family(model)
    what = FAMILY_NAMES.get(family, family)
    made, other = BASE_NAMES[base], BASE_NAMES["flux2" if base == "flux1" else "flux1"]
    return (f"This InfuseNet was made for {made} models; this one is {what} ({detail}). An InfuseNet for {made} "
            f"serves {SERVED[base]}: load one of those, or an InfuseNet made for {other}.")


def check_compatible(dm: "host.Flux", bundle: InfuseNetBundle, id_tokens: Tensor) -> None:
    """Hidden size, head size, latent channels and token width must agree; InfiniteYouError otherwise."""
    c = bundle.config
    source = bundle.files[0] if bundle.files else "the InfuseNet"
    if c.hidden_size != dm.hidden_size:
        raise InfiniteYouError(
            f"'{source}' has hidden size {c.hidden_size} but the base model has {dm.hidden_size}: "
            f"this InfuseNet was made for another model ({BASE_WIDTHS[bundle.base]})."
        )
    if c.head_dim != sum(dm.params.axes_dim):
        raise InfiniteYouError(f"'{source}' uses attention heads of {c.head_dim} channels; the base model uses {sum(dm.params.axes_dim)}.")
    if c.in_channels != latent_channels(dm):
        raise InfiniteYouError(f"'{source}' takes {c.in_channels}-channel latents; the base model's latent has {latent_channels(dm)}.")
    if id_tokens.ndim != 3 or id_tokens.shape[-1] != c.context_in_dim:
        raise InfiniteYouError(
            f"Identity tokens must be [1, tokens, {c.context_in_dim}] (from this InfuseNet's projection); got {list(id_tokens.shape)}."
        )


def latent_channels(dm: "host.Flux") -> int:
    """Channels of the noisy latent the base denoises (its output): 16 on every FLUX.1, 128 on FLUX.2. FLUX.1 Fill
    (and Depth/Canny) take more input channels: ComfyUI concatenates the mask and masked-image latent
    (or the control latent) after the noisy latent before the diffusion model."""
    return dm.params.out_channels


def noisy_latent(dm: "host.Flux", x: Tensor) -> Tensor:
    """The part of the diffusion model's input the InfuseNet reads: the noisy latent only, as the
    reference trained it (64 packed channels); Fill's mask and masked image are the base's alone."""
    return x[:, :latent_channels(dm)]


def block_map(n_base: int, n_branch: int) -> list[int]:
    """Branch residual index used after each of ``n_base`` base blocks (reference mapping)."""
    if n_branch == 0:
        return []
    step = math.ceil(n_base / n_branch)
    return [i // step for i in range(n_base)]


@torch.compiler.disable  # plain Python on a CPU copy: compiled, it would recompile for every sigma
def step_index(sigma: float, schedule: Tensor) -> int:
    """Index i of the sampling step whose interval [schedule[i], schedule[i+1]) holds ``sigma``."""
    s = schedule.detach().float().cpu()
    n_steps = len(s) - 1
    close = torch.isclose(s[:-1], torch.tensor(float(sigma)), rtol=1e-4, atol=1e-7).nonzero()
    if len(close):
        return int(close[0])
    return int(min(max(int((s[:-1] > sigma).sum()) - 1, 0), n_steps - 1))


def step_kept(i: int, n_steps: int, start: float, end: float) -> bool:
    """The reference's rule: step i of n is kept iff not (i/n < start or (i+1)/n > end)."""
    return not (i / n_steps < start or (i + 1) / n_steps > end)


RUNS_KEY = "infiniteyou_runs"
"""Entry of a sampling run's own ``transformer_options`` (in the copy of the model options :meth:`outer_sample`
makes for the run) that holds ``{wrapper key: RunState}``. The state lives and dies with the run, and a run nested
in another with the same model (a detailer, a guider that samples inside a sample) has its own."""


@dataclass(frozen=True, eq=False)
class CallPlan:
    """What the branch needs for one model call, decided before the diffusion model runs.

    Under ``TorchCompileModel`` the APPLY_MODEL wrapper makes it (eager Python, outside the diffusion model that
    node compiles) and hands it to the DIFFUSION_MODEL wrapper as a keyword argument of the diffusion model: unlike
    ``transformer_options``, whose guards ``TorchCompileModel`` drops, keyword arguments are guarded, so a compiled
    model recompiles when the plan changes shape (branch on or off, which rows) instead of reusing a graph made for
    another step. The tensors are built once per run and shape; the compiled region only reads them. Eager, the
    DIFFUSION_MODEL wrapper makes it (the same cached plan) when the model runs."""

    branch: "Branch"          # the InfuseNet to run, on this call's device
    rows: Tensor | None       # rows of the batch that get residuals (the kept cond chunks); None: every row
    control: Tensor           # packed control latent, one row per branch row [n, L, C*4], branch dtype
    tokens: Tensor            # identity tokens [n, Q, width], branch dtype
    guidance: Tensor          # the branch's fixed guidance [n] (float32)
    follow_base: bool         # the base's guidance instead, where the base has one
    scale: Tensor | None      # strength x mask per row [1 or n, L, 1] (float32); None: no mask
    strength: float


@dataclass
class RunState:
    """What one sampling run computes once and reuses at every model call, released when the run ends
    (like core's EasyCache holder): nothing stays on the device from one run to the next."""

    nets: dict[str, torch.nn.Module] = field(default_factory=dict)  # device -> this patch's InfuseNet there
    model_sampling: object | None = None   # the run's model sampling (sigma window)
    compile_options: dict | None = None    # TorchCompileModel's options when the run's model has them
    branches: dict[tuple, "Branch"] = field(default_factory=dict)  # eager branches of this run (see branch_for)
    control: dict[tuple, Tensor] = field(default_factory=dict)  # latent (h, w) -> processed control [b, C, h, w]
    plans: dict[tuple, CallPlan] = field(default_factory=dict)  # (chunks, n_chunks, per_chunk, h, w, device)
    schedule_source: Tensor | None = None  # transformer_options["sample_sigmas"] last seen
    schedule: Tensor | None = None         # its float32 CPU copy
    window_sigmas: Tensor | None = None    # transformer_options["sigmas"] of the step last decided...
    window_active: bool = True             # ...and whether the window held it: one decision (one sync) per step


class InfiniteYouPatch:
    """Per-apply settings and inputs, and the three wrappers; per-run state lives in the run (:data:`RUNS_KEY`)."""

    def __init__(
        self, bundle: InfuseNetBundle, id_tokens: Tensor, control_latent, strength: float, start: float, end: float,
        window: Window, guidance: float | None, apply_to: ApplyTo, mask: Tensor | None, vae, latent_format,
    ):
        self.bundle = bundle
        self.id_tokens = id_tokens
        self.control_source = control_latent
        self.strength = float(strength)
        self.start, self.end = float(start), float(end)
        self.window = window
        self.guidance = guidance
        self.apply_to = apply_to
        self.mask = None if mask is None else mask_batch(mask)
        self.vae = vae
        self.latent_format = latent_format
        self.model_sampling = None  # for a sigma window decided outside a sampling run (set by the caller)
        self.key = f"{WRAPPER_PREFIX}{uuid.uuid4().hex}"
        self.compiled_branches: dict[tuple, Branch] = {}  # compiled once, kept for later runs (see branch_for)

    # ------------------------------------------------------------ per sampling run
    def outer_sample(self, executor, noise: Tensor, *args, **kwargs):
        """OUTER_SAMPLE: the run's own copy of the model options, with this patch's :class:`RunState` in it and
        InfiniteYou's DIFFUSION_MODEL wrappers innermost, next to the FLUX forward. A wrapper that skips the model
        on some steps (core's EasyCache, added after Apply InfiniteYou in the graph) then skips the InfuseNet too,
        instead of dropping residuals it had us compute."""
        guider = executor.class_obj
        original = guider.model_options
        options = host.model_options_clone(original)
        host.wrappers_innermost(options, host.WrappersMP.DIFFUSION_MODEL, lambda key: key.startswith(WRAPPER_PREFIX))
        run = RunState(nets=self.branch_models(guider.model_patcher),
                       model_sampling=host.model_object(guider.model_patcher, "model_sampling"),
                       compile_options=host.compile_options(original))
        options.setdefault("transformer_options", {}).setdefault(RUNS_KEY, {})[self.key] = run
        guider.model_options = options
        try:
            self.control_for(run, noise.shape[-2], noise.shape[-1])
            return executor(noise, *args, **kwargs)
        finally:
            guider.model_options = original

    def branch_models(self, patcher) -> dict[str, "torch.nn.Module"]:
        """This patch's InfuseNet on each device of the run. In ComfyUI's multi-GPU mode every device
        has its own clone of the additional models (same ``clone_base_uuid``); elsewhere just one."""
        mine = getattr(self.bundle.patcher, "clone_base_uuid", None)
        nets: dict[str, torch.nn.Module] = {}
        for p in [patcher, *host.additional_models(patcher, host.MULTIGPU_KEY)]:
            for extra in host.additional_models(p, ADDITIONAL_MODELS_KEY):
                if extra is self.bundle.patcher or (mine is not None and getattr(extra, "clone_base_uuid", None) == mine):
                    nets.setdefault(str(extra.load_device), extra.model)
        return nets

    def run_of(self, transformer_options: dict) -> RunState:
        """The sampling run's state; outside a run (a direct model call) a state for this call alone."""
        run = (transformer_options.get(RUNS_KEY) or {}).get(self.key)
        return run if run is not None else RunState()

    def control_for(self, run: RunState, h: int, w: int) -> Tensor:
        """The processed control latent [b, C, h, w] for a latent of spatial size h x w (once per run)."""
        key = (h, w)
        if key not in run.control:
            src = self.control_source
            if callable(src):
                src = src(h, w)
            if src is None:
                if self.vae is None:
                    raise InfiniteYouError("Apply InfiniteYou needs a VAE to encode the empty (black) control image when no pose image is given.")
                src = black_control(self.vae, h, w)
            src = src.float()
            channels = self.latent_format.latent_channels
            if src.ndim != 4 or src.shape[1] != channels:
                raise InfiniteYouError(
                    f"The control latent is {list(src.shape)}; this model's latent has {channels} channels "
                    f"[batch, {channels}, height, width]: encode the pose image with the VAE of the model.")
            if src.shape[-2:] != (h, w):
                logging.info("InfiniteYou: control latent %s resized to the latent size %sx%s", list(src.shape), h, w)
                src = host.resize(src, w, h)
            run.control[key] = self.latent_format.process_in(src)
        return run.control[key]

    # ------------------------------------------------------------ per model call, before the diffusion model
    def is_active(self, transformer_options: dict, run: RunState | None = None) -> bool:
        """Whether the window holds this call's step. Decided once per step: the sampler hands every call of a
        step the same ``sigmas`` tensor, so its one host read (``float``) happens once, outside any compiled model."""
        sigmas = transformer_options.get("sigmas")
        if sigmas is None:
            return True
        if run is not None and sigmas is run.window_sigmas:
            return run.window_active
        active = self.window_holds(float(sigmas.flatten()[0]), transformer_options.get("sample_sigmas"), run)
        if run is not None:
            run.window_sigmas, run.window_active = sigmas, active
        return active

    def window_holds(self, sigma: float, schedule: Tensor | None, run: RunState | None) -> bool:
        if self.window == "steps" and schedule is not None and len(schedule) > 1:
            if run is None:
                return step_kept(step_index(sigma, schedule), len(schedule) - 1, self.start, self.end)
            if schedule is not run.schedule_source:  # copy the schedule off the device once per run
                run.schedule_source, run.schedule = schedule, schedule.detach().float().cpu()
            return step_kept(step_index(sigma, run.schedule), len(run.schedule) - 1, self.start, self.end)
        model_sampling = self.model_sampling if run is None or run.model_sampling is None else run.model_sampling
        if model_sampling is None or (self.start <= 0.0 and self.end >= 1.0):
            return True
        hi = model_sampling.percent_to_sigma(self.start)
        lo = model_sampling.percent_to_sigma(self.end)
        return lo <= sigma <= hi

    def plan_call(self, base, x: Tensor, transformer_options: dict, run: RunState | None = None) -> CallPlan | None:
        """This call's :class:`CallPlan`, or None when the branch does not run (outside the window, or no chunk
        of the batch gets residuals). ``base``: the FLUX diffusion model; ``x``: the model input [B, C, h, w] (its
        size and device are read)."""
        run = run if run is not None else self.run_of(transformer_options)
        if not self.is_active(transformer_options, run):
            return None
        cond_or_uncond = transformer_options.get("cond_or_uncond") or [0]
        n_chunks = len(cond_or_uncond)
        chunks = tuple(k for k, c in enumerate(cond_or_uncond) if c == 0 or self.apply_to == "both")
        if not chunks:
            return None
        per_chunk = x.shape[0] // n_chunks
        h, w = x.shape[-2:]
        key = (chunks, n_chunks, per_chunk, h, w, x.device)
        if key not in run.plans:
            run.plans[key] = self.new_plan(base, run, chunks, n_chunks, per_chunk, h, w, x.device)
        return run.plans[key]

    def new_plan(self, base, run: RunState, chunks: tuple, n_chunks: int, per_chunk: int, h: int, w: int,
                 device) -> CallPlan:
        """The plan for one batch layout (kept chunks of per_chunk rows each) and latent size, once per run."""
        net = run.nets.get(str(device), self.bundle.model)
        dtype = net.compute_dtype
        kept = len(chunks)
        rows = None if kept == n_chunks else torch.cat(
            [torch.arange(k * per_chunk, (k + 1) * per_chunk, device=device) for k in chunks])
        control, _ = base.process_img(self.control_for(run, h, w))
        control = control.to(device=device, dtype=dtype)
        if control.shape[0] in (1, per_chunk):
            control = per_row(control, per_chunk, kept)
        else:
            control = control[:1].expand(kept * per_chunk, -1, -1)
        fixed = 1.0 if self.guidance is None else float(self.guidance)
        return CallPlan(
            branch=self.branch_for(run, net, base.pe_embedder), rows=rows, control=control,
            tokens=self.branch_tokens(per_chunk, kept, device, dtype),
            guidance=torch.full((kept * per_chunk,), fixed, device=device), follow_base=self.guidance is None,
            scale=self.residual_scale(h, w, base.patch_size, per_chunk, kept, device), strength=self.strength)

    def branch_for(self, run: RunState, net: torch.nn.Module, pe_embedder: torch.nn.Module) -> "Branch":
        """The :class:`Branch` of ``net`` with the base's rotary embedder. A compiled one is kept on the patch for
        later runs (compiling again every run would cost as much as the run); an eager one lives for the run."""
        options = run.compile_options
        key = (id(net), id(pe_embedder), compile_key(options))
        cache = run.branches if options is None else self.compiled_branches
        if key not in cache:
            cache[key] = Branch(net, pe_embedder, options)
        return cache[key]

    def branch_tokens(self, per_chunk: int, n_chunks: int, device, dtype) -> Tensor:
        t = self.id_tokens
        if t.shape[0] not in (1, per_chunk):
            raise InfiniteYouError(f"Identity tokens have batch {t.shape[0]}; expected 1 or the latent batch {per_chunk}.")
        return per_row(t, per_chunk, n_chunks).to(device=device, dtype=dtype)

    def residual_scale(self, h: int, w: int, p: int, per_chunk: int, n_chunks: int, device) -> Tensor | None:
        """strength x mask, at token resolution, one row per branch row (or one for all): [1 or n, L, 1]."""
        if self.mask is None:
            return None
        if self.mask.shape[0] not in (1, per_chunk):
            raise InfiniteYouError(
                f"The mask batch has {self.mask.shape[0]} masks but the latent batch has {per_chunk} images: give "
                f"one mask (used for every image) or one mask per image ({per_chunk}).")
        h_tok, w_tok = (h + p // 2) // p, (w + p // 2) // p
        m = F.interpolate(self.mask.float().unsqueeze(1), size=(h_tok, w_tok), mode="bilinear", align_corners=False)
        m = m.reshape(m.shape[0], h_tok * w_tok, 1) * self.strength
        return (m if m.shape[0] == 1 else per_row(m, per_chunk, n_chunks)).to(device)

    def apply_model(self, executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={},
                    **kwargs):
        """APPLY_MODEL: where the run's diffusion model is compiled (``TorchCompileModel``), decide this call's plan
        (window, rows, inputs) before it runs and hand it to the DIFFUSION_MODEL wrapper as the diffusion model's
        keyword argument ``self.key``. Eager, the DIFFUSION_MODEL wrapper decides, so that a step a cache wrapper
        skips (core's EasyCache) costs the branch nothing at all."""
        run = (transformer_options.get(RUNS_KEY) or {}).get(self.key)
        if run is not None and run.compile_options is not None and self.strength != 0.0:
            kwargs[self.key] = self.plan_call(executor.class_obj.diffusion_model, x, transformer_options, run)
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    # ------------------------------------------------------------ per model call, inside the diffusion model
    def residuals(self, base, plan: CallPlan, x: Tensor, timestep: Tensor, y: Tensor | None, guidance: Tensor | None,
                  transformer_options: dict) -> tuple[list[Tensor], list[Tensor]]:
        """Branch residuals for the whole batch [B, L, hidden] (zeros on rows the plan leaves out)."""
        rows = plan.rows

        def pick(t: Tensor) -> Tensor:
            return t if rows is None else t.index_select(0, rows)

        dtype = plan.control.dtype
        img, img_ids = base.process_img(noisy_latent(base, x), transformer_options=transformer_options)
        pooled = None  # FLUX.1's branch reads the pooled text (zeros when there is none); FLUX.2 has none
        if self.bundle.pooled_text_width is not None:
            pooled = (as_dtype(pick(y), dtype) if y is not None else
                      plan.control.new_zeros((plan.control.shape[0], self.bundle.pooled_text_width)))
        g = as_dtype(pick(guidance), torch.float32) if plan.follow_base and guidance is not None else plan.guidance
        double, single = plan.branch.run(as_dtype(pick(img), dtype), pick(img_ids), plan.control, plan.tokens,
                                         as_dtype(pick(timestep), torch.float32), pooled, g)
        scale = None if plan.scale is None else as_dtype(plan.scale, x.dtype)

        def finish(r: Tensor) -> Tensor:
            r = as_dtype(r, x.dtype)
            if scale is not None:
                r = r * scale
            elif plan.strength != 1.0:
                r = r * plan.strength
            if rows is None:
                return r
            return r.new_zeros((x.shape[0],) + tuple(r.shape[1:])).index_copy_(0, rows, r)

        return [finish(r) for r in double], [finish(r) for r in single]

    def diffusion_model(self, executor, x, timestep, context, y=None, guidance=None, ref_latents=None, control=None,
                        transformer_options={}, **kwargs):
        """DIFFUSION_MODEL: add the residuals the plan asks for to the ``control`` the FLUX forward gets. Without
        a plan from :meth:`apply_model` (an eager run, or the diffusion model called directly) the plan is made here."""
        base = executor.class_obj
        if self.key in kwargs:
            plan = kwargs.pop(self.key)
        else:
            plan = self.plan_call(base, x, transformer_options) if self.strength != 0.0 else None
        if plan is not None:
            double, single = self.residuals(base, plan, x, timestep, y, guidance, transformer_options)
            control = merge_control(control, double, single, len(base.double_blocks), len(base.single_blocks))
        return executor(x, timestep, context, y, guidance, ref_latents, control, transformer_options, **kwargs)


def mask_batch(mask: Tensor) -> Tensor:
    """A mask as [B, H, W]: ComfyUI's MASK is [B, H, W]; [H, W] is one mask."""
    if mask.ndim < 2 or (mask.ndim > 3 and any(s != 1 for s in mask.shape[1:-2])):
        raise InfiniteYouError(f"The mask must be [height, width] or [batch, height, width]; got {list(mask.shape)}.")
    return mask.detach().reshape(-1, *mask.shape[-2:])


def per_row(t: Tensor, per_chunk: int, n_chunks: int) -> Tensor:
    """``t`` ([1 or per_chunk, ...]) as one row per branch row: the latent batch, once per kept chunk."""
    return t.expand(per_chunk, *t.shape[1:]).repeat(n_chunks, *([1] * (t.ndim - 1)))


def as_dtype(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` in ``dtype``, with no dispatch at all where it already is (most calls)."""
    return t if t.dtype == dtype else t.to(dtype)


def compile_key(options) -> object:
    """What tells TorchCompileModel's options apart: their values, and the identity of callables (the run's copy of
    the model options copies the dicts, not what is in them)."""
    if isinstance(options, dict):
        return tuple(sorted((k, compile_key(v)) for k, v in options.items()))
    return options if isinstance(options, (str, bool, int, float, type(None))) else id(options)


BRANCHES: "weakref.WeakValueDictionary[int, Branch]" = weakref.WeakValueDictionary()
"""Slot number -> live :class:`Branch`: how :data:`BRANCH_OP` (an op, which takes numbers and tensors) finds it."""
SLOT_NUMBERS = itertools.count(1)


class Branch:
    """This patch's InfuseNet on one device, with the base's rotary embedder: what a model call runs.

    Where ``TorchCompileModel`` traces the diffusion model (and its DIFFUSION_MODEL wrappers), the branch is one
    opaque op of the base's graph (:data:`BRANCH_OP`: no graph break) and the InfuseNet is compiled on its own,
    with the same options. Traced with the base instead, its blocks (ComfyUI's own block classes) would share
    dynamo's compiled code for those classes with the base's blocks, compiled with the guards on
    ``transformer_options`` dropped: where the base's blocks break the graph (an attention dynamo cannot trace)
    the InfuseNet would run code made for the base's options."""

    def __init__(self, net: torch.nn.Module, pe_embedder: torch.nn.Module, compile_options: dict | None):
        self.net, self.pe_embedder = net, pe_embedder
        compiled = compile_options is not None and compile_options.get("backend") != "cudagraphs"
        self.forward = torch.compile(net, **compile_options) if compiled else net  # cudagraphs: captured with the base
        self.n_double, self.n_single = len(net.controlnet_blocks), len(net.controlnet_single_blocks)
        self.hidden = net.hidden_size
        self.slot = next(SLOT_NUMBERS)
        BRANCHES[self.slot] = self

    def run(self, img, img_ids, control, tokens, timestep, pooled, guidance) -> tuple[list[Tensor], list[Tensor]]:
        """(double residuals, single residuals); through :data:`BRANCH_OP` while a compiler traces the caller."""
        if BRANCH_OP is not None and torch.compiler.is_compiling():
            out = BRANCH_OP(self.slot, self.n_double + self.n_single, self.hidden, img, img_ids, control, tokens,
                            timestep, pooled, guidance)
            return list(out[:self.n_double]), list(out[self.n_double:])
        return self(img, img_ids, control, tokens, timestep, pooled, guidance)

    @torch.compiler.disable  # never traced by the base's compiler: the InfuseNet runs eager or as compiled here
    def __call__(self, img, img_ids, control, tokens, timestep, pooled, guidance) -> tuple[list[Tensor], list[Tensor]]:
        text = () if pooled is None else (pooled,)
        return self.forward(img, img_ids, control, tokens, timestep, *text, guidance, self.pe_embedder)


def _branch_op(slot: int, n_outputs: int, hidden: int, img: Tensor, img_ids: Tensor, control: Tensor, tokens: Tensor,
               timestep: Tensor, pooled: Optional[Tensor], guidance: Tensor) -> list[Tensor]:
    double, single = BRANCHES[slot](img, img_ids, control, tokens, timestep, pooled, guidance)
    return [*double, *single]


def _branch_op_shapes(slot, n_outputs, hidden, img, img_ids, control, tokens, timestep, pooled, guidance):
    return [img.new_empty((img.shape[0], img.shape[1], hidden)) for _ in range(n_outputs)]


def register_branch_op():
    """:func:`_branch_op` as a torch op (one per copy of this module: ComfyUI and a test may both import it), or
    None where torch has no ``torch.library.custom_op`` (the branch then breaks the compiled graph, still correct)."""
    if not hasattr(torch.library, "custom_op") or not hasattr(torch.compiler, "is_compiling"):
        return None
    try:
        op = torch.library.custom_op(f"infiniteyou::branch_{id(BRANCHES):x}", _branch_op, mutates_args=())
        op.register_fake(_branch_op_shapes)
    except Exception as e:  # a torch whose op registration differs: correct all the same, with a graph break
        logging.warning("InfiniteYou: the InfuseNet cannot be one op of a compiled graph on torch %s (%s: %s)",
                        torch.__version__, type(e).__name__, e)
        return None
    return op


BRANCH_OP = register_branch_op()


def black_control(vae, h: int, w: int) -> Tensor:
    """The VAE latent of the reference's control image when no pose is given: black, the size of an h x w latent."""
    ratio = vae.spacial_compression_encode()
    return vae.encode(torch.zeros((1, h * ratio, w * ratio, 3)))


def merge_control(control: dict | None, double: list[Tensor], single: list[Tensor], n_double: int, n_single: int) -> dict:
    """A new control dict: ``control`` plus residuals mapped onto the base blocks (summed where both exist)."""
    out = dict(control) if control else {}

    def combine(existing, mine: list[Tensor], n_base: int) -> list:
        existing = list(existing or [])
        mapped = [mine[k] for k in block_map(n_base, len(mine))]
        merged = []
        for i in range(max(len(existing), len(mapped))):
            a = existing[i] if i < len(existing) else None
            b = mapped[i] if i < len(mapped) else None
            merged.append(b if a is None else a if b is None else a + b)
        return merged

    out["input"] = combine(out.get("input"), double, n_double)
    out["output"] = combine(out.get("output"), single, n_single)
    return out


def apply_infiniteyou(
    model: "host.ModelPatcher",
    bundle: InfuseNetBundle,
    id_tokens: Tensor,
    control_latent: Tensor | Callable[[int, int], Tensor] | None = None,
    strength: float = 1.0,
    start: float = 0.0,
    end: float = 1.0,
    window: Window = "steps",
    guidance: float | None = 1.0,
    apply_to: ApplyTo = "positive",
    mask: Tensor | None = None,
    vae=None,
) -> "host.ModelPatcher":
    """Return a clone of ``model`` that adds this InfuseNet's residuals; ``model`` is not changed.

    model: of the family the InfuseNet was made for (``bundle.base``): FLUX.1, or FLUX.2 [klein].
    id_tokens: [1 or batch, Q, width] from :func:`weights.project_identity` (4096 for FLUX.1, the base's text
    width for FLUX.2).
    control_latent: raw VAE latent of the pose image ([1, 16, h, w] on FLUX.1, [1, 128, h, w] from FLUX.2's VAE),
    a callable (h, w) -> latent, or None for the reference's black image (encoded with ``vae`` once per latent size).
    start/end: fraction of steps (window="steps", the reference) or sigma percent (window="sigma").
    guidance: the branch's guidance (reference 1.0); None follows the base model's guidance.
    apply_to: "positive" (reference: the negative pass gets nothing) or "both".
    mask: [H, W] or [B, H, W] in [0, 1], any resolution; limits the residuals to a region. A batch of masks gives
    each image of the latent batch its own (B must be 1 or the latent batch; other sizes are refused when sampling).
    """
    dm = flux_diffusion_model(model, bundle.base)
    check_compatible(dm, bundle, id_tokens)
    if window not in ("steps", "sigma"):
        raise InfiniteYouError(f"window must be 'steps' or 'sigma', got {window!r}.")
    if apply_to not in ("positive", "both"):
        raise InfiniteYouError(f"apply_to must be 'positive' or 'both', got {apply_to!r}.")
    for name, value in (("strength", strength), ("start", start), ("end", end), ("guidance", guidance)):
        if value is not None and not math.isfinite(float(value)):
            raise InfiniteYouError(f"{name} must be a finite number; got {value}.")
    if not 0.0 <= start <= end <= 1.0:
        raise InfiniteYouError(f"start and end must satisfy 0 <= start <= end <= 1; got start={start}, end={end}.")
    if control_latent is None and vae is None and strength != 0.0:
        raise InfiniteYouError("Without a pose image Apply InfiniteYou encodes a black image as control: connect a VAE.")
    clone = model.clone()
    if strength == 0.0:
        return clone  # bit-identical to the input model
    state = InfiniteYouPatch(bundle, id_tokens.detach(), control_latent, strength, start, end, window, guidance, apply_to,
                             mask, vae, model.model.latent_format)
    host.add_wrapper(clone, host.WrappersMP.OUTER_SAMPLE, state.key, state.outer_sample)
    host.add_wrapper(clone, host.WrappersMP.APPLY_MODEL, state.key, state.apply_model)
    host.add_wrapper(clone, host.WrappersMP.DIFFUSION_MODEL, state.key, state.diffusion_model)
    others = [m for m in host.additional_models(clone, ADDITIONAL_MODELS_KEY) if m is not bundle.patcher]
    host.set_additional_models(clone, ADDITIONAL_MODELS_KEY, others + [bundle.patcher])
    return clone
