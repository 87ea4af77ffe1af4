"""A new T2V family is one module plus a registry entry: a toy flow-matching family, defined only here,
trains through the same alignment recipe and loop as CogVideoX, and resumes from its checkpoint.

Flow matching (Wan2.1, HunyuanVideo) draws a sigma in (0, 1), noises by ``x_s = (1 - s) x0 + s noise``,
predicts the velocity ``noise - x0`` and weighs every sample 1: no integer DDPM timesteps and no
``1 / (1 - alphabar_t)``.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lift_core import storage
from lift_core.config import load_config
from lift_core.t2v import spec as spec_mod
from lift_core.t2v.align import RewardAlignRecipe
from lift_core.t2v.cache import TensorCache, caption_key
from lift_core.train import LoopSettings, latest_checkpoint, run_worker

LATENT = (3, 2, 4, 4)  # [F, C, H, W], the denoiser's layout
TEXT = (5, 8)  # [L, D]


class ToyVelocityNet(torch.nn.Module):
    """Predicts a velocity from the noisy latents, the sigma and the mean text embedding."""

    def __init__(self):
        super().__init__()
        self.latent = torch.nn.Linear(LATENT[1], LATENT[1])
        self.text = torch.nn.Linear(TEXT[1], LATENT[1])
        self.sigma = torch.nn.Linear(1, LATENT[1])

    def forward(self, noisy, text_embeds, sigmas):
        x = noisy.permute(0, 1, 3, 4, 2)  # channels last for the linear layers
        cond = self.text(text_embeds.mean(dim=1)) + self.sigma(sigmas[:, None].to(noisy.dtype))
        return (self.latent(x) + cond[:, None, None, None, :]).permute(0, 1, 4, 2, 3)


class ToyFlowMatchingSpec(spec_mod.T2VModelSpec):
    family = "toy-flow"
    default_lora_targets = ("latent",)
    latent_components = ()
    text_components = ()
    calls: list[str] = []  # which training hooks ran (class-level, the test runs in-process)

    def load_pipeline(self, model, dtype="float32", device="cpu", parts="all"):
        torch.manual_seed(0)
        net = ToyVelocityNet()
        weights = os.path.join(model, "denoiser.safetensors")
        if os.path.exists(weights):
            from safetensors.torch import load_file

            net.load_state_dict(load_file(weights))
        return SimpleNamespace(denoiser=net)

    def denoiser(self, pipe):
        return pipe.denoiser

    def set_denoiser(self, pipe, module):
        pipe.denoiser = module

    def check_shape(self, height, width, num_frames):
        pass

    def encode_video_dist(self, pipe, pixels):
        raise NotImplementedError("the test fills the latent cache itself")

    def sample_latents(self, pipe, dist_params, generator=None):
        return dist_params  # the cache holds the latents themselves

    def encode_text(self, pipe, captions, max_sequence_length):
        raise NotImplementedError("the test fills the text cache itself")

    def sample_timestep(self, pipe, generator):
        self.calls.append("sigma")
        return torch.rand((), generator=generator)  # a float sigma, not an integer timestep

    def add_noise(self, pipe, x0, noise, sigmas):
        s = sigmas.view(-1, 1, 1, 1, 1).to(x0.dtype)
        return (1 - s) * x0 + s * noise

    def forward(self, pipe, denoiser, noisy, text_embeds, sigmas):
        return denoiser(noisy, text_embeds, sigmas)

    def prediction_and_target(self, pipe, model_output, noisy, x0, noise, sigmas):
        self.calls.append("velocity")
        return model_output, noise - x0

    def loss_weights(self, pipe, sigmas):
        return torch.ones(sigmas.shape[0])

    def generate(self, pipe, captions, generators, **kwargs):
        raise NotImplementedError

    def save_lora(self, out_dir, denoiser):
        raise NotImplementedError("the toy family trains in full")

    def load_lora(self, pipe, lora_dir, adapter_name="aligned"):
        raise NotImplementedError

    def save_denoiser(self, denoiser, out_dir):
        from safetensors.torch import save_file

        os.makedirs(out_dir, exist_ok=True)
        save_file({k: v.contiguous() for k, v in denoiser.state_dict().items()},
                  os.path.join(out_dir, "denoiser.safetensors"))

    def load_denoiser(self, path, dtype="float32"):
        raise NotImplementedError


@pytest.fixture
def toy_family(monkeypatch):
    monkeypatch.setitem(spec_mod.SPECS, "toy-flow", None)  # restored after the test
    spec_mod.register_family(ToyFlowMatchingSpec())
    ToyFlowMatchingSpec.calls = []
    return ToyFlowMatchingSpec


def _config(tmp_path, max_steps: int):
    cfg = load_config(None, [f"run_root={tmp_path}", "t2v.family=toy-flow", "align.mode=full",
                             f"align.train.max_steps={max_steps}", "align.train.batch_size=2",
                             "align.train.checkpoint_every=1", "align.train.warmup_steps=0",
                             "align.train.lr=0.01"])
    latents, texts = TensorCache(str(tmp_path / "latents")), TensorCache(str(tmp_path / "text"))
    rng = np.random.default_rng(0)
    samples = []
    for i in range(4):
        vid, caption = f"{i:016x}", f"caption {i}"
        samples.append({"video_id": vid, "uri": f"/v/{i}.mp4", "caption": caption, "source": "generated",
                        "critic_id": "c", "reward": 0.25 * (i + 1), "weight": 0.25 * (i + 1)})
        if not latents.keys() >= {vid}:
            latents.put_many({vid: torch.from_numpy(rng.standard_normal(LATENT).astype(np.float32))})
            texts.put_many({caption_key(caption): torch.from_numpy(rng.standard_normal(TEXT).astype(np.float32))})
    out = tmp_path / "align-out"
    os.makedirs(tmp_path / "model", exist_ok=True)
    return {"cfg": cfg.model_dump(mode="json"), "settings": LoopSettings.for_stage(cfg.align), "out_uri": str(out),
            "model": str(tmp_path / "model"), "samples": samples, "latents_uri": latents.uri, "text_uri": texts.uri,
            "weights_uri": str(out / "weights"), "lora_uri": None}


def test_toy_flow_matching_family_trains_and_resumes_through_the_same_loop(toy_family, tmp_path):
    run_worker(RewardAlignRecipe(), _config(tmp_path, max_steps=1))
    out = tmp_path / "align-out"
    assert latest_checkpoint(str(out))[0] == 1
    assert {"sigma", "velocity"} <= set(toy_family.calls)  # the family's own sampling and target ran
    first = storage.read_table(str(out / "train_log.parquet")).to_pylist()
    assert len(first) == 1 and first[0]["loss"] > 0

    run_worker(RewardAlignRecipe(), _config(tmp_path, max_steps=2))  # same folder: resumes after step 1
    log = storage.read_table(str(out / "train_log.parquet")).to_pylist()
    assert [r["step"] for r in log] == [1, 2] and log[0] == first[0]
    assert storage.read_json(str(out / "train_result.json"))["resumed_from_step"] == 1
    assert (out / "weights" / "transformer" / "denoiser.safetensors").exists()


def test_unknown_family_names_the_known_ones():
    with pytest.raises(ValueError, match="known: .*cogvideox"):
        spec_mod.get_spec("no-such-family")
