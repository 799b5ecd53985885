"""Image augmentation for pixel learners: DrQ's random shift."""

from __future__ import annotations

import torch


def random_shift(images: torch.Tensor, pad: int = 4, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ random shift: replicate-pad by `pad`, crop back at a random integer offset per sample.

    Args:
        images: (batch, C, H, W), any dtype (uint8 frames or float feature maps); env frames
            (batch, H, W, 3) go through `.permute(0, 3, 1, 2)` and back.
        pad: largest shift in pixels along each axis; 0 returns `images` unchanged.
        generator: source of the shifts (for reproducible augmentation).

    Returns:
        (batch, C, H, W), same dtype and device; each sample moved by its own (dy, dx) in
        [−pad, pad]², edges replicated. Gradients flow to `images` (a gather, no interpolation).
    """
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad must be a non-negative integer number of pixels, got {pad!r}")
    if images.ndim != 4:
        raise ValueError(f"images must be (batch, C, H, W), got shape {tuple(images.shape)}")
    if pad == 0:
        return images
    b, c, h, w = images.shape
    device = generator.device if generator is not None else images.device
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator, device=device).to(images.device)
    # Clamping source indices to the image is the same as cropping a replicate-padded copy.
    rows = (torch.arange(h, device=images.device) + offsets[:, :1] - pad).clamp_(0, h - 1)  # (batch, H)
    cols = (torch.arange(w, device=images.device) + offsets[:, 1:] - pad).clamp_(0, w - 1)  # (batch, W)
    index = (rows[:, :, None] * w + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return images.reshape(b, c, h * w).gather(2, index).view(b, c, h, w)
