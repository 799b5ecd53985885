"""Observation batch → feature vector: proprioceptive state fused with one image encoder per camera.

An observation batch is a dict with "state" (batch, D) float32 and, per camera, either
"images/<camera>" (batch, H, W, 3) uint8 frames, or "embeddings/<camera>" (batch, C, h, w) feature
maps of a frozen backbone precomputed when the frame entered the replay buffer (so a CPU learner
never runs the backbone during updates).
"""

from __future__ import annotations

import torch
from torch import nn

from robot_rl.agents.augmentation import random_shift
from robot_rl.agents.encoders import (
    EncoderConfig,
    ImageEncoder,
    build_encoder,
)


STATE_STD_FLOOR = 1e-2
"""Smallest std a state feature is standardized by (1 cm, 0.01 rad, 0.01 N): see `set_state_normalization`."""


class ObsEncoder(nn.Module):
    """Features (batch, feature_dim) = [state, encoder_1(camera_1), …, encoder_k(camera_k)].

    `augment_pad` > 0 applies DrQ random shifts to raw frames while training (never to
    precomputed embeddings, never in eval mode).
    """

    def __init__(self, state_dim: int, cameras: tuple[str, ...] = (), encoder: EncoderConfig | None = None, *,
                 augment_pad: int = 4) -> None:
        super().__init__()
        if cameras and encoder is None:
            raise ValueError("cameras need an encoder config")
        self.state_dim = state_dim
        self.cameras = tuple(cameras)
        self.encoder_config = encoder
        self.augment_pad = augment_pad
        self.encoders = nn.ModuleDict({cam: build_encoder(encoder) for cam in self.cameras})
        self.feature_dim = state_dim + sum(e.out_dim for e in self.encoders.values())
        # State standardization (set once from data before training): positions that matter vary by
        # centimetres next to forces of tens of newtons; unscaled, the critic barely sees the former.
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_inv_std", torch.ones(state_dim))
        self.state_clip = 10.0

    @property
    def frozen(self) -> bool:
        return self.encoder_config is not None and self.encoder_config.frozen

    def image_encoder(self, camera: str) -> ImageEncoder:
        return self.encoders[camera]

    @torch.no_grad()
    def set_state_normalization(self, states: torch.Tensor, *, min_std: float = STATE_STD_FLOOR, clip: float = 10.0) -> None:
        """Standardize state features with the mean and std of `states` (N, D); a feature whose std
        is below `min_std` is scaled as if it varied by `min_std` (1 cm, 0.01 rad, 0.01 N).

        Why the floor: a channel that was quiet in the data (a cube that never tilted in the demos,
        the tool's roll, angular velocity) otherwise gets a scale of thousands and its first wobble
        pins the input at ±clip — the policy then acts on values it never saw (with a 1e-3 floor,
        pick_cube policies flew off once a missed grasp tipped the cube)."""
        self.state_mean.copy_(states.mean(0))
        self.state_inv_std.copy_(1.0 / states.std(0).clamp_min(min_std))
        self.state_clip = clip

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        state = ((obs["state"] - self.state_mean) * self.state_inv_std).clamp(-self.state_clip, self.state_clip)
        parts = [state]
        for cam, enc in self.encoders.items():
            emb = obs.get(f"embeddings/{cam}")
            if emb is not None:
                parts.append(enc.head(emb.float()))
                continue
            images = obs[f"images/{cam}"]
            if self.training and self.augment_pad and not self.frozen:
                images = random_shift(images.permute(0, 3, 1, 2), self.augment_pad).permute(0, 2, 3, 1)
            parts.append(enc(images))
        return torch.cat(parts, -1) if len(parts) > 1 else parts[0]

    @torch.no_grad()
    def embed(self, camera: str, images: torch.Tensor) -> torch.Tensor:
        """Frozen-backbone features of uint8 frames (batch, H, W, 3) as float16 for storage: the
        feature maps, or pooled vectors when the head averages (`ImageEncoder.stored_shape`)."""
        return self.encoders[camera].stored_features(images).to(torch.float16)
