"""The trainer learns identity: after a short training, the validation images of each person look more like
that person (ArcFace similarity to a held-out photo) than the untrained branch's images do, and more than
they look like the other people.

The world is small but every part is the real one: six generated people that the calibrated test ArcFace
tells apart (``tests/infusenet/face/people.py``), drawn 64x64 with the face in the same place; the cache
written by :func:`infusenet.trainer.data.prepare_cache` (ArcFace of the photo, the keypoint pose image the
trainer draws itself, CLIP text, VAE latents); the :class:`~infusenet.trainer.loop.Trainer` with a
:class:`~infusenet.trainer.watch.RunWatcher`, whose validation generates through Apply InfiniteYou on
ComfyUI's sampler and scores with the pack's face pipeline. Two stand-ins are chosen so that a picture can
carry a face at this size:

* the VAE is a TAESD whose weights average 8x8 pixel blocks into the latent and paint them back, so a face
  survives the round trip (checked first, person by person);
* the tiny FLUX is random, as elsewhere, with its output projection scaled up so that its velocity can reach
  the size of the flow target (a random LayerNorm + Linear head cannot; a trained FLUX can).

The pose image is the same for every person (same face box), so the only thing telling the branch who to
draw is the identity embedding. Validation photos are other pictures of the same people (640x480, another
face size) than the ones trained on.

Measured (200 steps of batch 6 at lr 5e-3, the Resampler at 0.1 of it; validation with 8 Euler steps and 2
seeds per person; means of the ArcFace cosine, no face = 0), the same on ComfyUI 0.30 and 0.3.75 to 2e-4:

=====================================================  ==========
VAE round trip of the training faces, right person      0.747
VAE round trip, other people                           -0.150
untrained branch, right person (= other people: it      -0.004
ignores the identity, every person's image is the same)
trained, right person, seed 0 (the test)                 0.109
trained, other people (wrong-person control)            -0.025
trained, right person, seeds 1 and 2 (0.30)             0.114, 0.099
=====================================================  ==========

Training adds 0.113 over the untrained branch and 0.134 over the wrong-person control; the test asserts 0.08
for both, that every validation image has a face and that the loss falls below 0.3 of its start (4.06 -> 0.43).
With one or two intra-op threads the numbers agree to 2e-3 (seed 0: 0.1106 and 0.1093).

Why the Resampler learns at a tenth of the rate (``optim.resampler_lr_scale``): its attention over [face
token, learned latents] is the one place the face embedding enters, and while drawing the average face is most
of the loss, a Resampler at the full rate saturates that softmax onto its latents; once the face token gets no
weight no gradient reaches it again. At the full rate seed 1 learned no identity in 400 steps (every person's
identity tokens within 3e-4 of each other) and seed 0 with two threads reached only 0.074: the run was chaotic.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from devtools.face_models import write_insightface_root
from devtools.tiny_training import tiny_config
from infusenet.trainer.config import ValidationIdentity
from infusenet.trainer.data import CachedDataset, Encoders, prepare_cache
from infusenet.trainer.loop import Trainer
from infusenet.trainer.watch import RunWatcher, face_embeddings, cosine
from tests.infusenet.face.people import draw_person, write_calibrated_arcface
from tests.fixtures.shared_files import shared_file
from tests.infusenet.trainer.conftest import save

SIZE = (64, 64)
PEOPLE = 6
FACE = (16, 8, 48, 48)                 # on the 8x8 latent grid, the people's aspect (0.8) as calibrated
HELD_OUT = ((640, 480), (200, 100, 360, 300))
OUTPUT_SCALE = 4.0
STEPS = 200
LR = 5e-3
RESAMPLER_LR_SCALE = 0.1
SAMPLER_STEPS = 8
MARGIN = 0.08
MEASURED = {}


def block_vae_state(scale: float = 1 / 3) -> dict:
    """TAESD weights (16 latent channels) for an exact block autoencoder: the encoder averages each 8x8
    block of RGB and writes 2c - 1 into 15 channels (each colour 5 times, alternating sign, channel 15 zero);
    the decoder averages the copies back and paints the block. ``vae_scale`` 1/3 gives latents in [-3, 3]."""
    import comfy.taesd.taesd

    with torch.device("meta"):
        model = comfy.taesd.taesd.TAESD(latent_channels=16)
    sd = {k: torch.zeros(v.shape) for k, v in model.state_dict().items()}  # every Block's convs 0: identity
    sign = [1.0 if (k // 3) % 2 == 0 else -1.0 for k in range(15)]
    for c in range(3):
        sd["taesd_encoder.0.weight"][c, c, 1, 1] = 1.0
        for i in (2, 6, 10):  # stride-2 convs: mean of the 2x2 pixels
            sd[f"taesd_encoder.{i}.weight"][c, c, 1:, 1:] = 0.25
        for i in (7, 12, 17):  # after each nearest upsampling: pass through
            sd[f"taesd_decoder.{i}.weight"][c, c, 1, 1] = 1.0
        sd["taesd_decoder.19.weight"][c, c, 1, 1] = 1.0
    for k in range(15):
        sd["taesd_encoder.14.weight"][k, k % 3, 1, 1] = 2.0 * sign[k]
        sd["taesd_encoder.14.bias"][k] = -sign[k]
        sd["taesd_decoder.1.weight"][k % 3, k, 1, 1] = 0.5 * sign[k] / 5
    sd["taesd_decoder.1.bias"][:3] = 0.5
    sd["vae_scale"] = torch.tensor(scale)
    sd["vae_shift"] = torch.tensor(0.0)
    return sd


@pytest.fixture(scope="module")
def block_vae():
    import comfy.sd

    return comfy.sd.VAE(sd=block_vae_state())


@pytest.fixture(scope="module")
def people_encoder(tmp_path_factory):
    from infusenet.face.analysis import load_detector
    from infusenet.face.encoder import load_face_encoder

    root = write_insightface_root(tmp_path_factory.mktemp("insightface")).parent.parent
    arcface = shared_file(tmp_path_factory, tmp_path_factory.mktemp("arcface") / "recognition_arcface_ir_se50.pth",
                          "arcface-ir-se50-calibrated.pth", lambda target: write_calibrated_arcface(target, load_detector(root)))
    return load_face_encoder(root, arcface, providers="auto")


@pytest.fixture(scope="module")
def flux():
    """A tiny random FLUX whose output head can reach the flow target's size (see the module docstring)."""
    from devtools import flux_pair as fp

    made = fp.make_base(2, 2, seed=0, text_dim=768)
    with torch.no_grad():
        made.patcher.model.diffusion_model.final_layer.linear.weight.mul_(OUTPUT_SCALE)
    return made


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """Training photos (manifest with the trainer's automatic pose) and held-out photos of the six people."""
    root = tmp_path_factory.mktemp("people")
    (root / "train").mkdir()
    (root / "held_out").mkdir()
    with open(root / "manifest.jsonl", "w") as f:
        for p in range(PEOPLE):
            save(draw_person(SIZE, [FACE], p), root / "train" / f"p{p}.png")
            save(draw_person(*HELD_OUT[:1], [HELD_OUT[1]], p), root / "held_out" / f"p{p}.png")
            f.write(json.dumps({"id": f"p{p}", "identity": f"train/p{p}.png", "caption": "a portrait photo",
                                "pose": "auto"}) + "\n")
    return root


def test_faces_survive_the_vae_and_are_told_apart(people, people_encoder, block_vae):
    from infusenet.face.identity import identity_from_images

    images = torch.stack([torch.from_numpy(draw_person(SIZE, [FACE], p)) for p in range(PEOPLE)])
    with torch.no_grad():
        decoded = block_vae.decode(block_vae.encode(images)).float()
    blocks = torch.nn.functional.avg_pool2d(images.permute(0, 3, 1, 2), 8)
    painted = torch.nn.functional.interpolate(blocks, scale_factor=8, mode="nearest").permute(0, 2, 3, 1)
    assert float((decoded - painted).abs().max()) < 0.02  # 8x8 block means, up to the decoder's tanh
    refs = [identity_from_images(people_encoder, [torch.from_numpy(draw_person(HELD_OUT[0], [HELD_OUT[1]], p))])
            for p in range(PEOPLE)]
    embeddings = face_embeddings(people_encoder, decoded)
    sims = np.array([[cosine(e, r) for r in refs] for e in embeddings])
    right, wrong = np.diag(sims), sims[~np.eye(PEOPLE, dtype=bool)]
    MEASURED["round trip"] = (float(right.mean()), float(wrong.mean()))
    assert (sims.argmax(1) == np.arange(PEOPLE)).all(), sims.round(3)
    assert right.min() > 0.5 and wrong.mean() < 0.0, sims.round(3)


def test_training_raises_the_identity_similarity(people, people_encoder, block_vae, flux, clip, tmp_path):
    from infusenet.face.pose import pose_image

    start = time.perf_counter()
    report = prepare_cache(people / "manifest.jsonl", tmp_path / "cache", Encoders(people_encoder, clip, block_vae),
                           SIZE)
    assert sorted(report.prepared) == [f"p{p}" for p in range(PEOPLE)] and not report.skipped
    dataset = CachedDataset(tmp_path / "cache")
    controls = [dataset[i]["control"] for i in range(len(dataset))]
    assert all(torch.equal(c, controls[0]) for c in controls)  # the pose says where, never who
    pose = pose_image(people_encoder, torch.from_numpy(draw_person(SIZE, [FACE], 0)), *SIZE)
    save(pose[0].numpy(), tmp_path / "pose.png")

    cfg = tiny_config(tmp_path / "cache", tmp_path / "run", steps=STEPS, batch=PEOPLE)
    cfg.optim.lr = LR
    cfg.optim.resampler_lr_scale = RESAMPLER_LR_SCALE
    w = cfg.watch
    w.validate_every = STEPS
    w.identities = [ValidationIdentity(f"p{p}", str(people / "held_out" / f"p{p}.png"), pose=str(tmp_path / "pose.png"))
                    for p in range(PEOPLE)]
    w.prompts, (w.width, w.height), w.steps, w.guidance = ["a portrait photo"] * 2, SIZE, SAMPLER_STEPS, 1.0
    watcher = RunWatcher(cfg, clip=clip, vae=block_vae, face_encoder=people_encoder)
    trainer = Trainer(cfg, flux.patcher, dataset, watcher=watcher)
    try:
        untrained = watcher.validate(0, trainer)
        losses = [trainer.train_step() for _ in range(STEPS)]
    finally:
        trainer.close()
    trained = watcher.results[-1]
    assert trained.step == STEPS and len(watcher.results) == 2
    MEASURED.update(untrained=(untrained.mean, untrained.other_mean), trained=(trained.mean, trained.other_mean),
                    per_person=trained.identity, loss=(float(np.mean(losses[:10])), float(np.mean(losses[-10:]))),
                    seconds=time.perf_counter() - start)
    print("identity learning:", MEASURED)
    assert untrained.mean == pytest.approx(untrained.other_mean, abs=1e-6)  # zero residuals: identity-blind
    assert np.mean(losses[-10:]) < 0.3 * np.mean(losses[:10])
    assert trained.faces_found == 1.0
    assert trained.mean > untrained.mean + MARGIN, MEASURED
    assert trained.mean > trained.other_mean + MARGIN, MEASURED
