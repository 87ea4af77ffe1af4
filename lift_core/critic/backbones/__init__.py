"""The built-in critic backbones; importing this package registers them (``lift_core.critic.backbone``).

- ``auto_vlm``: the shared base of transformers-native video VLMs (``AutoProcessor`` +
  ``AutoModelForImageTextToText``);
- ``qwen2_vl``: Qwen2-VL and Qwen2.5-VL, and their tiny builds for the demo and the tests;
- ``vila``: VILA1.5 with a LiFT-Critic LoRA (LiFT's released critic), in plain torch (``vila_model``).
"""

from lift_core.critic.backbones import qwen2_vl  # noqa: F401  (registers qwen2-vl and qwen2.5-vl)
from lift_core.critic.backbones import vila  # noqa: F401,E402  (registers vila)
