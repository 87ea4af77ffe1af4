"""One distributed training loop for every recipe (critic LoRA, T2V reward alignment, ...).

``loop`` owns Ray Train, the resumable data order, checkpoints, the train log, LR schedules, AdamW,
gradient clipping and accumulation, gradient checkpointing, mixed precision and callbacks. A recipe
(``lift_core.critic.train``, ``lift_core.t2v.align``) supplies only the model, the batch, the loss
and the final outputs.
"""

from lift_core.train.callbacks import Callback
from lift_core.train.checkpoints import CorruptCheckpoint, latest_checkpoint, resume_message, resume_point
from lift_core.train.data_order import DataOrder
from lift_core.train.loop import LoopSettings, Recipe, TrainModel, WorkerContext, fit, run_worker

__all__ = [
    "Callback",
    "CorruptCheckpoint",
    "DataOrder",
    "LoopSettings",
    "Recipe",
    "TrainModel",
    "WorkerContext",
    "fit",
    "latest_checkpoint",
    "resume_message",
    "resume_point",
    "run_worker",
]
