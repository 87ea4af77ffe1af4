"""VILA1.5, the base of LiFT-Critic, as plain torch and transformers modules (no ``llava`` package).

LiFT's critic (``LiFT-Critic/test/run_critic_13b.py``) loads a VILA1.5 checkpoint with LiFT's LoRA
through its vendored ``llava/model/builder.py``. The facts taken from that code (and VILA's):

Checkpoint layout (``Efficient-Large-Model/VILA1.5-13b``):

- ``config.json``: ``model_type: llava_llama``, ``architectures: [LlavaLlamaModel]``, the three part
  configs ``llm_cfg``, ``vision_tower_cfg`` and ``mm_projector_cfg`` (a dict: the part lives in the
  sub-folder of that name without ``_cfg``; a string: the part's path), and ``mm_vision_select_layer``
  (-2), ``mm_vision_select_feature`` (``cls_patch``), ``image_aspect_ratio`` (``resize``),
  ``mm_use_im_start_end`` and ``mm_use_im_patch_token``;
- ``llm/``: a ``LlamaForCausalLM`` and its tokenizer (loaded slow-style, ``legacy=False``);
- ``vision_tower/``: a ``SiglipVisionModel`` and its ``preprocessor_config.json``;
- ``mm_projector/``: ``config.json`` with ``mm_projector_type`` and the weights ``layers.<i>.*``.

The forward pass (``llava_arch.py``): each frame's vision features are ``hidden_states[select_layer]``
of the tower (``patch`` drops the first token, ``cls_patch`` keeps all), projected to the LLM's width;
every ``IMAGE_TOKEN_INDEX`` (-200) in the input ids is replaced by one frame's projected tokens.

The projectors (``base_projector.py``): ``identity``, ``linear``, ``mlp<N>x_gelu`` and VILA1.5's
``mlp_downsample``: each 2x2 block of neighbouring tokens concatenated (a zero row/column pads an odd
side, so SigLIP-384's 27x27 becomes 14x14 = 196 tokens per frame), then LayerNorm, Linear, GELU, Linear.

The LiFT-Critic adapter (``builder.py``, LoRA branch): ``non_lora_trainables.bin`` is loaded into the
model, then ``PeftModel.from_pretrained`` over the whole VILA model (module paths ``llm.model.layers...``),
then merged. See ``load_lift_adapter`` for the checks made here.

Nothing here executes code from a checkpoint: ``trust_remote_code`` is never set, and pickles are read
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

log = logging.getLogger("lift.critic.vila")

IMAGE_TOKEN_INDEX = -200  # llava.constants: the input id each frame's tokens replace
PARTS = ("llm", "vision_tower", "mm_projector")


class VilaCheckpointError(ValueError):
    """A VILA checkpoint or LiFT-Critic adapter that cannot be used; the message names the missing part."""


# --------------------------------------------------------------------------- the checkpoint
@dataclass(frozen=True)
class VilaCheckpoint:
    """A VILA checkpoint directory: its top-level config and the folder of each part."""

    root: str
    config: dict[str, Any]
    llm: str
    vision_tower: str
    mm_projector: str

    @classmethod
    def open(cls, root: str) -> "VilaCheckpoint":
        """Validate the layout of ``root``; VilaCheckpointError names the first missing part."""
        cfg_path = os.path.join(root, "config.json")
        if not os.path.isfile(cfg_path):
            raise VilaCheckpointError(f"VILA checkpoint {root}: no config.json (expected a local VILA1.5 directory "
                                      f"with config.json, llm/, vision_tower/ and mm_projector/)")
        config = _read_json(cfg_path)
        folders = {}
        for part in PARTS:
            folders[part] = _part_folder(root, config, part)
        return cls(root, config, **folders)

    def get(self, key: str, default: Any = None) -> Any:
        return self.config.get(key, default)

    def projector_type(self) -> str:
        cfg = _read_json(os.path.join(self.mm_projector, "config.json"))
        kind = cfg.get("mm_projector_type")
        if not kind:
            raise VilaCheckpointError(f"VILA checkpoint {self.root}: mm_projector/config.json has no mm_projector_type")
        return str(kind)


def _read_json(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise VilaCheckpointError(f"{path}: expected a JSON object")
    return data


def _part_folder(root: str, config: dict[str, Any], part: str) -> str:
    """Where ``part`` lives (VILA's ``get_model_config``): a dict config -> ``root/part``; a string -> that path."""
    cfg = config.get(f"{part}_cfg")
    if cfg is None:
        raise VilaCheckpointError(f"VILA checkpoint {root}: config.json has no {part}_cfg (no {part} part)")
    folder = os.path.join(root, part) if isinstance(cfg, dict) else str(cfg)
    if isinstance(cfg, str) and not os.path.isabs(folder) and not os.path.isdir(folder):
        folder = os.path.join(root, folder)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise VilaCheckpointError(f"VILA checkpoint {root}: no {part} (missing {folder}/config.json)")
    return folder


def load_state_file(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``.bin`` pickle read with ``weights_only=True``."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError and friends: the file holds more than tensors
        raise VilaCheckpointError(
            f"{path}: torch.load(weights_only=True) refused it ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "only plain tensors are loaded, never arbitrary pickles"
        ) from None
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise VilaCheckpointError(f"{path}: expected a dict of tensors")
    return data


def _weights_file(folder: str, what: str) -> str:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise VilaCheckpointError(f"{what}: no weights in {folder} (model.safetensors or pytorch_model.bin)")


# --------------------------------------------------------------------------- the modules
class DownSample2x2(nn.Module):
    """VILA's ``DownSampleBlock``: a square grid of tokens -> each 2x2 block's 4 tokens concatenated."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, c = x.shape
        side = int(tokens**0.5)
        if side * side != tokens:
            raise ValueError(f"mlp_downsample needs a square grid of vision tokens, got {tokens}")
        g = x.reshape(n, side, side, c)
        if side % 2:  # pad the odd side with a zero row and a zero column
            g = nn.functional.pad(g, (0, 0, 0, 1, 0, 1))
            side += 1
        # Pairs along the second axis, then pairs along the first: channel order as VILA's flat_square.
        g = g.reshape(n, side, side // 2, 2 * c).permute(0, 2, 1, 3).reshape(n, side // 2, side // 2, 4 * c)
        return g.reshape(n, -1, 4 * c)


class VilaProjector(nn.Module):
    """VILA's ``MultimodalProjector``; ``layers`` keeps VILA's weight names (``layers.<i>.*``)."""

    def __init__(self, kind: str, vision_width: int, llm_width: int):
        super().__init__()
        self.kind = kind
        if kind == "identity":
            self.layers = nn.Identity()
        elif kind == "linear":
            self.layers = nn.Linear(vision_width, llm_width)
        elif kind == "mlp_downsample":
            self.layers = nn.Sequential(
                DownSample2x2(),
                nn.LayerNorm(vision_width * 4),
                nn.Linear(vision_width * 4, llm_width),
                nn.GELU(),
                nn.Linear(llm_width, llm_width),
            )
        elif m := re.fullmatch(r"mlp(\d+)x_gelu", kind):
            mods: list[nn.Module] = [nn.Linear(vision_width, llm_width)]
            for _ in range(1, int(m.group(1))):
                mods += [nn.GELU(), nn.Linear(llm_width, llm_width)]
            self.layers = nn.Sequential(*mods)
        else:
            raise VilaCheckpointError(f"unknown mm_projector_type {kind!r} (known: identity, linear, "
                                      "mlp_downsample, mlp<N>x_gelu)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class VilaVisionTower(nn.Module):
    """The vision tower; ``vision_tower`` is the transformers model (VILA's weight path ``vision_tower.vision_tower``)."""

    def __init__(self, model: nn.Module, select_layer: int, select_feature: str):
        super().__init__()
        if select_feature not in ("patch", "cls_patch"):
            raise VilaCheckpointError(f"unknown mm_vision_select_feature {select_feature!r} (patch or cls_patch)")
        self.vision_tower = model
        self.select_layer = int(select_layer)
        self.select_feature = select_feature

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        p = next(self.vision_tower.parameters())
        out = self.vision_tower(pixel_values.to(device=p.device, dtype=p.dtype), output_hidden_states=True)
        feats = out.hidden_states[self.select_layer]
        return feats[:, 1:] if self.select_feature == "patch" else feats


class VilaModel(nn.Module):
    """``llm`` + ``vision_tower`` + ``mm_projector`` with VILA's module paths (so LiFT's LoRA keys match)."""

    def __init__(self, llm: nn.Module, vision_tower: VilaVisionTower, mm_projector: VilaProjector,
                 max_length: int | None = None):
        super().__init__()
        self.llm = llm
        self.vision_tower = vision_tower
        self.mm_projector = mm_projector
        self.max_length = max_length

    @classmethod
    def from_checkpoint(cls, ckpt: VilaCheckpoint, device: Any, dtype: Any) -> "VilaModel":
        from transformers import AutoConfig, AutoModelForCausalLM, SiglipVisionModel

        vt_cfg = AutoConfig.from_pretrained(ckpt.vision_tower)
        if vt_cfg.model_type != "siglip_vision_model":
            raise VilaCheckpointError(
                f"VILA checkpoint {ckpt.root}: vision tower {vt_cfg.model_type!r} is not supported (SigLIP only, as in "
                "VILA1.5-3b/8b/13b; the 40b's InternViT is not)")
        if ckpt.get("s2"):
            raise VilaCheckpointError(f"VILA checkpoint {ckpt.root}: S2 multi-scale vision towers are not supported")
        llm = AutoModelForCausalLM.from_pretrained(ckpt.llm, dtype=dtype)
        tower = SiglipVisionModel.from_pretrained(ckpt.vision_tower, dtype=dtype)
        projector = VilaProjector(ckpt.projector_type(), int(vt_cfg.hidden_size), int(llm.config.hidden_size))
        state = load_state_file(_weights_file(ckpt.mm_projector, f"VILA checkpoint {ckpt.root}: mm_projector"))
        expected = set(projector.state_dict())
        if missing := sorted(expected - set(state)):
            raise VilaCheckpointError(f"VILA checkpoint {ckpt.root}: mm_projector weights lack {missing}")
        projector.load_state_dict({k: state[k] for k in expected})
        vision = VilaVisionTower(tower, ckpt.get("mm_vision_select_layer", -2),
                                 ckpt.get("mm_vision_select_feature", "patch"))
        max_length = getattr(llm.config, "tokenizer_model_max_length", None)
        return cls(llm, vision, projector.to(dtype=dtype), max_length).to(device).eval()

    # ------------------------------------------------------------------ multimodal inputs
    def frame_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[frames, tokens, llm width]``: each frame's projected vision tokens."""
        feats = self.vision_tower(pixel_values)
        return self.mm_projector(feats.to(next(self.mm_projector.parameters(), feats).dtype))

    def input_embeds(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor,
                     video_frames: torch.Tensor, row_video: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(inputs_embeds, attention_mask, position_ids) with each image marker replaced by its frame's tokens.

        Row ``r`` shows the frames ``pixel_values[start:start+count]`` with ``(start, count) =
        video_frames[row_video[r]]``, one per marker, in order. Rows are re-padded on the side the
        input was padded on (left for scoring), and positions count the real tokens only."""
        tokens = self.frame_tokens(pixel_values) if pixel_values.shape[0] else None
        embed = self.llm.get_input_embeddings()
        left = bool(attention_mask.shape[1] and (attention_mask[:, 0] == 0).any())
        rows = []
        for r in range(input_ids.shape[0]):
            ids = input_ids[r][attention_mask[r].bool()]
            start, count = (int(v) for v in video_frames[int(row_video[r])])
            marks = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
            if len(marks) != count:
                raise ValueError(f"row {r}: {len(marks)} image markers for {count} frames")
            text = embed(ids.clamp(min=0))
            pieces, prev = [], 0
            for k, pos in enumerate(marks):
                pieces += [text[prev:pos], tokens[start + k].to(text.dtype)]
                prev = pos + 1
            pieces.append(text[prev:])
            rows.append(torch.cat(pieces))
        longest = max(x.shape[0] for x in rows)
        if self.max_length is not None and longest > self.max_length:
            raise ValueError(f"a prompt with its frames is {longest} tokens, over the LLM's {self.max_length}")
        dim = rows[0].shape[1]
        embeds = rows[0].new_zeros(len(rows), longest, dim)
        mask = torch.zeros(len(rows), longest, dtype=attention_mask.dtype, device=embeds.device)
        positions = torch.zeros(len(rows), longest, dtype=torch.long, device=embeds.device)
        for r, x in enumerate(rows):
            n = x.shape[0]
            sl = slice(longest - n, longest) if left else slice(0, n)
            embeds[r, sl], mask[r, sl] = x, 1
            positions[r, sl] = torch.arange(n, device=embeds.device)
        return embeds, mask, positions

    def forward(self, input_ids, attention_mask, pixel_values, video_frames, row_video, **kwargs):
        embeds, mask, positions = self.input_embeds(input_ids, attention_mask, pixel_values, video_frames, row_video)
        return self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, **kwargs)

    def generate(self, input_ids, attention_mask, pixel_values, video_frames, row_video, **kwargs):
        """The LLM's ``generate`` from the multimodal embeddings: sequences hold the new tokens only."""
        embeds, mask, _ = self.input_embeds(input_ids, attention_mask, pixel_values, video_frames, row_video)
        return self.llm.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)


# --------------------------------------------------------------------------- LiFT-Critic adapters
def _non_lora_key(key: str, known: set[str]) -> str | None:
    """The model weight a ``non_lora_trainables.bin`` key names (VILA's rules, plus one).

    VILA drops a leading ``base_model.``, then a leading ``model.`` when some key starts with
    ``model.model.`` (LLaVA's layout). Keys saved from VILA's own ``PeftModel`` are
    ``base_model.model.<path>``: VILA's rules leave ``model.<path>``, which names nothing in
    ``LlavaLlamaModel``, so VILA's ``load_state_dict(strict=False)`` drops them silently. Here that
    ``model.`` is dropped too (they are the critic's own trained weights), and a key that still names
    no weight is an error. LiFT's released files are empty, so this never changes their scores.
    """
    k = key[len("base_model."):] if key.startswith("base_model.") else key
    for cand in (k, k[len("model."):] if k.startswith("model.") else None):
        # transformers 5 names the SigLIP tower's weights without VILA's ``vision_model.``.
        for name in (cand, cand and cand.replace("vision_tower.vision_tower.vision_model.", "vision_tower.vision_tower.")):
            if name is not None and name in known:
                return name
    return None


def _lora_targets(weights: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Size]]:
    """Module path -> {lora_A/lora_B: shape} of a PEFT LoRA state dict (``base_model.model.<path>.lora_A.weight``)."""
    out: dict[str, dict[str, torch.Size]] = {}
    for key, t in weights.items():
        m = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.(lora_A|lora_B)(?:\.[^.]+)?\.weight", key)
        if m:
            out.setdefault(m.group(1), {})[m.group(2)] = t.shape
    return out


def check_adapter_fits(model: nn.Module, adapter_dir: str, weights: dict[str, torch.Tensor]) -> None:
    """VilaCheckpointError when the LoRA weights are for another base: a module it adapts is not in
    ``model``, or has other input/output sizes."""
    targets = _lora_targets(weights)
    if not targets:
        raise VilaCheckpointError(f"LoRA adapter {adapter_dir}: its weights hold no lora_A/lora_B tensors")
    modules = dict(model.named_modules())
    cfg = _read_json(os.path.join(adapter_dir, "adapter_config.json"))
    base = cfg.get("base_model_name_or_path") or "(not recorded)"
    for path, shapes in sorted(targets.items()):
        mod = modules.get(path)
        if mod is None:
            raise VilaCheckpointError(
                f"LoRA adapter {adapter_dir} is for another base (recorded: {base}): it adapts {path}, "
                "which this VILA checkpoint does not have")
        a, b = shapes.get("lora_A"), shapes.get("lora_B")
        size_in, size_out = getattr(mod, "in_features", None), getattr(mod, "out_features", None)
        if a is None or b is None or a[1] != size_in or b[0] != size_out:
            raise VilaCheckpointError(
                f"LoRA adapter {adapter_dir} is for another base (recorded: {base}): {path} is "
                f"{size_in}->{size_out} here, the adapter's LoRA is {None if a is None else a[1]}->"
                f"{None if b is None else b[0]}")


def adapter_weights(adapter_dir: str) -> dict[str, torch.Tensor]:
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        path = os.path.join(adapter_dir, name)
        if os.path.isfile(path):
            return load_state_file(path)
    raise VilaCheckpointError(f"LoRA adapter {adapter_dir}: no adapter_model.safetensors or adapter_model.bin")


def load_non_lora_trainables(model: nn.Module, adapter_dir: str) -> int:
    """Load ``non_lora_trainables.bin`` (if the adapter has one) into ``model``; returns the tensors loaded."""
    path = os.path.join(adapter_dir, "non_lora_trainables.bin")
    if not os.path.isfile(path):
        log.info("%s has no non_lora_trainables.bin: only the LoRA weights are loaded", adapter_dir)
        return 0
    state = load_state_file(path)
    params = model.state_dict()
    unknown = [k for k in state if _non_lora_key(k, set(params)) is None]
    if unknown:
        raise VilaCheckpointError(f"{path}: {len(unknown)} tensors name no weight of this VILA model, "
                                  f"e.g. {unknown[:3]} (an adapter for another base?)")
    with torch.no_grad():
        for key, value in state.items():
            target = params[_non_lora_key(key, set(params))]
            if target.shape != value.shape:
                raise VilaCheckpointError(f"{path}: {key} is {tuple(value.shape)}, the model's weight "
                                          f"{tuple(target.shape)} (an adapter for another base?)")
            target.copy_(value.to(dtype=target.dtype, device=target.device))
    return len(state)


def load_lift_adapter(model: VilaModel, adapter_dir: str) -> VilaModel:
    """``model`` with a LiFT-Critic adapter applied as LiFT's builder does: ``non_lora_trainables.bin``,
    then the LoRA (``PeftModel.from_pretrained``), merged into the weights.

    The adapter is checked against the model first, so an adapter for another base fails with the
    module it does not fit, not deep inside PEFT. The adapter's ``task_type`` (``CAUSAL_LM``) is not
    used: it would wrap the model in PEFT's causal-LM class, which expects a transformers model."""
    from peft import PeftConfig, PeftModel

    if not os.path.isfile(os.path.join(adapter_dir, "adapter_config.json")):
        raise VilaCheckpointError(f"not a PEFT adapter dir (no adapter_config.json): {adapter_dir}")
    check_adapter_fits(model, adapter_dir, adapter_weights(adapter_dir))
    load_non_lora_trainables(model, adapter_dir)
    config = PeftConfig.from_pretrained(adapter_dir)
    config.task_type = None
    config.inference_mode = True
    return PeftModel.from_pretrained(model, adapter_dir, config=config).merge_and_unload()


def expand_frames(text: str, placeholder: str, frames: int, image_token: str) -> str:
    """``text`` with ``placeholder`` replaced by ``image_token + "\\n"`` once per frame (LiFT's
    ``(DEFAULT_IMAGE_TOKEN + "\\n") * len(images) + qs``)."""
    if "<image>" in text:
        raise ValueError("the prompt text holds '<image>' of its own (in the caption?): it would take a frame's place")
    if placeholder not in text:
        raise ValueError(f"the prompt has no {placeholder!r} placeholder for the video")
    return text.replace(placeholder, (image_token + "\n") * frames, 1)


def tokenize_with_images(tokenizer: Any, text: str) -> list[int]:
    """LiFT's ``tokenizer_image_token``: each text chunk between ``<image>`` tokens is tokenized on its
    own (with special tokens), the BOS of every chunk after the first is dropped, and an
    ``IMAGE_TOKEN_INDEX`` stands for each ``<image>``."""
    chunks = [tokenizer(c).input_ids for c in text.split("<image>")]
    bos = tokenizer.bos_token_id
    offset = 1 if chunks[0] and chunks[0][0] == bos else 0
    ids = list(chunks[0])
    for chunk in chunks[1:]:
        ids += [IMAGE_TOKEN_INDEX, *chunk[offset:]]
    return ids


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of ``rows`` padded on ``side`` to the longest."""
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(longest - len(r), longest) if side == "left" else slice(0, len(r))
        ids[i, sl] = torch.tensor(list(r), dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask
