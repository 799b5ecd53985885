"""Observation layout for the learner: which parts of a gymnasium observation are a flat state
vector and which are camera images, for any env with Box or Dict observations.

Image entries are uint8 Boxes shaped (H, W, 3); every other Box (nested in Dicts at any depth) is
flattened into one float32 state vector in a fixed key order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from robot_rl.errors import ConfigError

BASE_ACTION_KEY = "base_action"
"""Top-level observation key of the base policy's proposed action in residual RL (base-normalized
units, set by `envs.residual.ResidualEnv`). It is part of the state the networks see, and also
passed to the agent by this name, so a residual agent finds it without knowing the state's order."""

SKIP_KEYS = ("privileged",)
"""Dict keys left out of the state unless asked for (ground truth a real robot cannot observe)."""


@dataclass(frozen=True)
class ObsLayout:
    """Paths (tuples of dict keys, () for a bare Box) of state parts and images."""

    state: tuple[tuple[tuple[str, ...], int], ...]
    """(path, flat size) of each state part, in concatenation order."""
    images: tuple[tuple[tuple[str, ...], tuple[int, int, int]], ...]
    """(path, (H, W, 3)) of each camera image."""

    @property
    def state_dim(self) -> int:
        return sum(size for _, size in self.state)

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(path[-1] for path, _ in self.images)

    @property
    def base_action_slice(self) -> slice | None:
        """Where the `BASE_ACTION_KEY` part lies in the state vector (None: not a residual env)."""
        start = 0
        for path, size in self.state:
            if path == (BASE_ACTION_KEY,):
                return slice(start, start + size)
            start += size
        return None

    def named_vectors(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """The state parts agents read by name, cut from a state vector (…, state_dim): today only
        {BASE_ACTION_KEY: (…, A)} of a residual env, else {}."""
        cut = self.base_action_slice
        return {} if cut is None else {BASE_ACTION_KEY: np.ascontiguousarray(state[..., cut])}

    @staticmethod
    def of(space: spaces.Space, *, include: tuple[str, ...] = (), images: bool = True) -> ObsLayout:
        """Layout of an observation space. `include` lists SKIP_KEYS to keep (e.g. "privileged");
        `images=False` drops cameras (state-only learning)."""
        state: list = []
        imgs: list = []

        def walk(sp: spaces.Space, path: tuple[str, ...]) -> None:
            if isinstance(sp, spaces.Dict):
                for key in sorted(sp.spaces):
                    if key in SKIP_KEYS and key not in include:
                        continue
                    walk(sp.spaces[key], path + (key,))
            elif isinstance(sp, spaces.Box):
                if sp.dtype == np.uint8 and len(sp.shape) == 3 and sp.shape[-1] == 3:
                    if images:
                        imgs.append((path, tuple(sp.shape)))
                else:
                    state.append((path, int(np.prod(sp.shape))))
            else:
                raise ConfigError(f"observation part {'/'.join(path) or '<root>'} is a {type(sp).__name__}: "
                                  "the agents take Box and Dict observations only")

        walk(space, ())
        if not state and not imgs:
            raise ConfigError("the observation space has no Box parts to learn from")
        return ObsLayout(tuple(state), tuple(imgs))

    def state_vector(self, obs: Any) -> np.ndarray:
        """Flat float32 state of one observation, (state_dim,)."""
        parts = [np.asarray(_get(obs, path), dtype=np.float32).reshape(-1) for path, _ in self.state]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def raw(self, obs: Any) -> dict[str, np.ndarray]:
        """One observation as the agents' flat dict: "state" (D,), "images/<camera>" (H, W, 3) and
        the `named_vectors` ("base_action" (A,) in a residual env)."""
        out = {"state": self.state_vector(obs)}
        out.update(self.named_vectors(out["state"]))
        for cam, img in self.image_arrays(obs).items():
            out[f"images/{cam}"] = np.ascontiguousarray(img)
        return out

    def image_arrays(self, obs: Any) -> dict[str, np.ndarray]:
        """Camera images of one observation by camera name, each (H, W, 3) uint8."""
        return {path[-1]: np.asarray(_get(obs, path), dtype=np.uint8) for path, _ in self.images}


    def record(self) -> dict[str, list]:
        """Plain-data description saved in checkpoints: {"state": [[name, size], …], "images": [[name, [H, W, 3]], …]}."""
        return {"state": [["/".join(path), int(size)] for path, size in self.state],
                "images": [["/".join(path), [int(n) for n in shape]] for path, shape in self.images]}

    def check_matches(self, saved: dict[str, list] | None, *, what: str) -> None:
        """Raise ConfigError naming each observation part that differs from `saved` (a `record()`).

        A checkpoint's weights only fit the observation they were trained on; without this, loading
        into a changed env (a new twin feature, other cameras, other task) fails deep in torch with
        tensor shapes and no names. `saved=None` (checkpoints written before 2026-12-01) checks nothing.
        """
        if saved is None:
            return
        diffs = []
        record = self.record()
        for kind in ("state", "images"):
            before, now = dict(saved.get(kind, [])), dict(record[kind])  # plain lists both: torch.load keeps them
            diffs += [f"{name} {before[name]} → {now[name]}" for name in before if name in now and before[name] != now[name]]
            diffs += [f"{name} missing now" for name in before if name not in now]
            diffs += [f"{name} new" for name in now if name not in before]
        if diffs:
            raise ConfigError(f"{what} was trained on another observation than this env gives ({'; '.join(diffs)}): "
                              "the task, --obs/--privileged settings or robot_rl's observation changed since "
                              "(e.g. pick_cube's twin gained cube_from_tcp_m on 2026-12-01). Retrain, or use the "
                              "robot_rl version it was trained with.")


def _get(obs: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        obs = obs[key]
    return obs
