"""What is specific to one diffusers T2V model family, behind one small interface (finetrainers-style).

A ``T2VModelSpec`` knows how to:

- load the pipeline (hub id or local directory) and name its parts (the trainable denoiser);
- prepare latents: pixels -> the VAE's latent distribution (what the cache stores), and a sample of it
  scaled and laid out the way the denoiser wants;
- condition on text: captions -> the text encoder's embeddings (what the cache stores);
- train: draw a timestep (or sigma), noise the latents, run the denoiser, and give the prediction, its
  target and the per-sample loss weight. CogVideoX (DDPM, v-prediction) predicts x0 against x0 with
  LiFT's weight ``1 / (1 - alphabar_t)``; a flow-matching family would draw a sigma, predict the
  velocity against ``noise - x0`` and weigh every sample 1;
- generate videos from captions;
- save and load LoRA weights in the family's diffusers format.

Everything else (generation jobs, the cache, the training loop, evaluation) is model-agnostic and goes
through ``get_spec(cfg.t2v.family)``. A new family is one subclass and ``register_family``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def torch_dtype(name: str):
    import torch

    return getattr(torch, DTYPES[name])


def frames_to_pixels(frames: np.ndarray | Sequence[np.ndarray]):
    """uint8 ``[B, T, H, W, 3]`` (or a list of ``[T, H, W, 3]``) -> float ``[B, 3, T, H, W]`` in [-1, 1]."""
    import torch

    arr = np.stack(list(frames)) if not isinstance(frames, np.ndarray) else frames
    if arr.ndim == 4:
        arr = arr[None]
    if arr.dtype != np.uint8 or arr.ndim != 5 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [B, T, H, W, 3], got {arr.dtype} {arr.shape}")
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 4, 1, 2, 3).float()
    return x / 127.5 - 1.0


class T2VModelSpec(ABC):
    """The model-specific half of generation and alignment."""

    family: str
    default_lora_targets: tuple[str, ...]
    # Pipeline subfolders whose content decides the cached latents / text embeddings (cache keys).
    latent_components: tuple[str, ...]
    text_components: tuple[str, ...]

    # ------------------------------------------------------------------ loading
    @abstractmethod
    def load_pipeline(self, model: str, dtype: str = "float32", device: str = "cpu", parts: str = "all") -> Any:
        """The diffusers pipeline from a hub id or a local directory.

        ``parts``: ``"all"``; ``"encoders"`` (no denoiser: filling the cache); ``"denoiser"`` (no text
        encoder: training from cached embeddings).
        """

    def reduce_vae_memory(self, pipe: Any, tiling: bool, slicing: bool) -> None:
        """Switch on the VAE's tiled and/or sliced encode and decode (``t2v.vae_tiling``, ``t2v.vae_slicing``)."""
        vae = getattr(pipe, "vae", None)
        if tiling:
            vae.enable_tiling()
        if slicing:
            vae.enable_slicing()

    @abstractmethod
    def denoiser(self, pipe: Any) -> Any:
        """The module that alignment trains (LoRA or full)."""

    @abstractmethod
    def set_denoiser(self, pipe: Any, module: Any) -> None:
        """Replace the denoiser (full fine-tuning output)."""

    @abstractmethod
    def check_shape(self, height: int, width: int, num_frames: int) -> None:
        """Raise ValueError when the video shape is not one the model can encode or generate."""

    # ------------------------------------------------------------------ latents and text
    @abstractmethod
    def encode_video_dist(self, pipe: Any, pixels: Any) -> Any:
        """Pixels ``[B, 3, T, H, W]`` in [-1, 1] -> latent distribution parameters (what the cache stores)."""

    @abstractmethod
    def sample_latents(self, pipe: Any, dist_params: Any, generator: Any = None) -> Any:
        """A scaled latent sample ``x0`` in the denoiser's layout from cached distribution parameters."""

    @abstractmethod
    def encode_text(self, pipe: Any, captions: Sequence[str], max_sequence_length: int) -> Any:
        """Captions -> text embeddings ``[B, L, D]`` (what the cache stores)."""

    # ------------------------------------------------------------------ training
    @abstractmethod
    def sample_timestep(self, pipe: Any, generator: Any) -> Any:
        """One training timestep (or sigma) as a 0-d tensor, drawn from the sample's own generator."""

    @abstractmethod
    def add_noise(self, pipe: Any, x0: Any, noise: Any, timesteps: Any) -> Any: ...

    @abstractmethod
    def forward(self, pipe: Any, denoiser: Any, noisy: Any, text_embeds: Any, timesteps: Any) -> Any:
        """The denoiser's raw output on noisy latents."""

    @abstractmethod
    def prediction_and_target(self, pipe: Any, model_output: Any, noisy: Any, x0: Any, noise: Any,
                              timesteps: Any) -> tuple[Any, Any]:
        """(what the loss compares, what it should equal), both in the latents' layout."""

    @abstractmethod
    def loss_weights(self, pipe: Any, timesteps: Any) -> Any:
        """Per-sample weights ``[B]`` of the squared error at these timesteps."""

    # ------------------------------------------------------------------ generation
    @abstractmethod
    def generate(self, pipe: Any, captions: Sequence[str], generators: Sequence[Any], *, height: int, width: int,
                 num_frames: int, num_inference_steps: int, guidance_scale: float,
                 max_sequence_length: int) -> np.ndarray:
        """uint8 ``[B, T, H, W, 3]`` videos, one per (caption, generator)."""

    # ------------------------------------------------------------------ LoRA
    @abstractmethod
    def save_lora(self, out_dir: str, denoiser: Any) -> None: ...

    @abstractmethod
    def load_lora(self, pipe: Any, lora_dir: str, adapter_name: str = "aligned") -> None: ...

    # ------------------------------------------------------------------ full fine-tuning
    @abstractmethod
    def save_denoiser(self, denoiser: Any, out_dir: str) -> None: ...

    @abstractmethod
    def load_denoiser(self, path: str, dtype: str = "float32") -> Any: ...


class CogVideoXSpec(T2VModelSpec):
    """CogVideoX (2b / 5b and the tiny test models) through diffusers' ``CogVideoXPipeline``.

    Latents follow diffusers' ``train_cogvideox_lora.py``: the VAE's ``latent_dist`` is sampled,
    permuted to ``[B, F, C, H, W]`` and multiplied by ``vae.config.scaling_factor``; the transformer
    predicts v; ``scheduler.get_velocity(model_output, noisy, t)`` turns it into x0.
    """

    family = "cogvideox"
    default_lora_targets = ("to_q", "to_k", "to_v", "to_out.0")
    latent_components = ("vae",)
    text_components = ("text_encoder", "tokenizer")

    def load_pipeline(self, model: str, dtype: str = "float32", device: str = "cpu", parts: str = "all") -> Any:
        from diffusers import CogVideoXPipeline

        skip = {"all": {}, "encoders": {"transformer": None}, "denoiser": {"text_encoder": None, "tokenizer": None}}
        if parts not in skip:
            raise ValueError(f"parts must be one of {sorted(skip)}, got {parts!r}")
        pipe = CogVideoXPipeline.from_pretrained(model, dtype=torch_dtype(dtype), **skip[parts])
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(device)

    def denoiser(self, pipe: Any) -> Any:
        return pipe.transformer

    def set_denoiser(self, pipe: Any, module: Any) -> None:
        pipe.transformer = module

    def check_shape(self, height: int, width: int, num_frames: int) -> None:
        if (num_frames - 1) % 4:
            raise ValueError(f"CogVideoX needs 4k+1 frames, got t2v.num_frames={num_frames}")
        if height % 16 or width % 16:
            raise ValueError(f"CogVideoX needs sides that are multiples of 16, got {height}x{width}")

    def encode_video_dist(self, pipe: Any, pixels: Any) -> Any:
        import torch

        vae = pipe.vae
        with torch.no_grad():
            dist = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist
        # DiagonalGaussianDistribution.parameters: mean and logvar stacked on the channel axis.
        return dist.parameters.float().cpu()

    def sample_latents(self, pipe: Any, dist_params: Any, generator: Any = None) -> Any:
        import torch

        mean, logvar = torch.chunk(dist_params, 2, dim=1)
        std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        latents = (mean + std * eps).permute(0, 2, 1, 3, 4)  # [B, C, F, H, W] -> [B, F, C, H, W]
        return latents * float(pipe.vae.config.scaling_factor)

    def encode_text(self, pipe: Any, captions: Sequence[str], max_sequence_length: int) -> Any:
        import torch

        with torch.no_grad():
            embeds, _ = pipe.encode_prompt(
                list(captions),
                do_classifier_free_guidance=False,
                max_sequence_length=max_sequence_length,
                device=pipe.text_encoder.device,
            )
        return embeds.float().cpu()

    def sample_timestep(self, pipe: Any, generator: Any) -> Any:
        import torch

        n_t = int(pipe.scheduler.config.num_train_timesteps)
        return torch.randint(0, n_t, (1,), generator=generator)[0]

    def add_noise(self, pipe: Any, x0: Any, noise: Any, timesteps: Any) -> Any:
        return pipe.scheduler.add_noise(x0, noise, timesteps)

    def forward(self, pipe: Any, denoiser: Any, noisy: Any, text_embeds: Any, timesteps: Any) -> Any:
        rotary = None
        inner = getattr(denoiser, "module", denoiser)  # DDP wraps the transformer
        if inner.config.use_rotary_positional_embeddings:
            h = noisy.shape[-2] * pipe.vae_scale_factor_spatial
            w = noisy.shape[-1] * pipe.vae_scale_factor_spatial
            rotary = pipe._prepare_rotary_positional_embeddings(h, w, noisy.shape[1], noisy.device)
        return denoiser(
            hidden_states=noisy,
            encoder_hidden_states=text_embeds,
            timestep=timesteps,
            image_rotary_emb=rotary,
            return_dict=False,
        )[0]

    def prediction_and_target(self, pipe: Any, model_output: Any, noisy: Any, x0: Any, noise: Any,
                              timesteps: Any) -> tuple[Any, Any]:
        # v-prediction -> x0: sqrt(a) * x_t - sqrt(1 - a) * v, which is exactly get_velocity(v, x_t, t).
        return pipe.scheduler.get_velocity(model_output, noisy, timesteps), x0

    def loss_weights(self, pipe: Any, timesteps: Any) -> Any:
        import torch

        alphas = pipe.scheduler.alphas_cumprod.to(device=timesteps.device, dtype=torch.float32)
        return 1.0 / (1.0 - alphas[timesteps])

    def generate(self, pipe: Any, captions: Sequence[str], generators: Sequence[Any], *, height: int, width: int,
                 num_frames: int, num_inference_steps: int, guidance_scale: float,
                 max_sequence_length: int) -> np.ndarray:
        out = pipe(prompt=list(captions), height=height, width=width, num_frames=num_frames,
                   num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                   max_sequence_length=max_sequence_length, generator=list(generators), output_type="np")
        frames = np.asarray(out.frames)  # float [B, T, H, W, 3] in [0, 1]
        return np.clip(np.round(frames * 255.0), 0, 255).astype(np.uint8)

    def save_lora(self, out_dir: str, denoiser: Any) -> None:
        from diffusers import CogVideoXPipeline
        from peft.utils import get_peft_model_state_dict

        inner = getattr(denoiser, "module", denoiser)
        CogVideoXPipeline.save_lora_weights(out_dir, transformer_lora_layers=get_peft_model_state_dict(inner))

    def load_lora(self, pipe: Any, lora_dir: str, adapter_name: str = "aligned") -> None:
        pipe.load_lora_weights(lora_dir, adapter_name=adapter_name)

    def save_denoiser(self, denoiser: Any, out_dir: str) -> None:
        getattr(denoiser, "module", denoiser).save_pretrained(out_dir)

    def load_denoiser(self, path: str, dtype: str = "float32") -> Any:
        from diffusers import CogVideoXTransformer3DModel

        return CogVideoXTransformer3DModel.from_pretrained(path, dtype=torch_dtype(dtype))


SPECS: dict[str, T2VModelSpec] = {}


def register_family(spec: T2VModelSpec) -> T2VModelSpec:
    """Make ``spec`` selectable as ``t2v.family: <spec.family>``."""
    SPECS[spec.family] = spec
    return spec


register_family(CogVideoXSpec())


def get_spec(family: str) -> T2VModelSpec:
    try:
        return SPECS[family]
    except KeyError:
        raise ValueError(f"unknown t2v.family {family!r}; known: {sorted(SPECS)}") from None


__all__ = ["CogVideoXSpec", "SPECS", "T2VModelSpec", "frames_to_pixels", "get_spec", "register_family", "torch_dtype"]
