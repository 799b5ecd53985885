"""Getting data into the learner's buffers: actor steps (online, and interventions into the demo
buffer too) and recorded demo episodes, with frozen-backbone embeddings computed on the way in."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from robot_rl.agents.obs_layout import ObsLayout
from robot_rl.agents.sac import SACAgent
from robot_rl.data.episodes import Episode
from robot_rl.errors import ConfigError
from robot_rl.learning import wire
from robot_rl.learning.config import TrainConfig
from robot_rl.learning.replay import EpisodeAssembler, FieldSpec, ReplayBuffer

EMBED_BATCH = 32
"""Frames embedded per backbone call: batching makes the frozen backbone cheap per frame."""


class Ingestor:
    """Owns the online and demo buffers. One thread (the learner's)."""

    def __init__(self, agent: SACAgent, layout: ObsLayout, cfg: TrainConfig, *,
                 device: torch.device = torch.device("cpu")) -> None:
        self.agent, self.layout, self.cfg = agent, layout, cfg
        self.device = device
        """The agent's device: frames go there to be embedded, embeddings come back to host memory."""
        self.embed = cfg.obs == "pixels" and agent.encoder.frozen
        fields = {"state": FieldSpec((layout.state_dim,), "float32")}
        for name, vector in layout.named_vectors(np.zeros(layout.state_dim, np.float32)).items():
            fields[name] = FieldSpec(vector.shape, "float32")  # e.g. a residual run's base action, by name
        for (path, shape) in layout.images:
            cam = path[-1]
            if self.embed:
                fields[f"embeddings/{cam}"] = FieldSpec(agent.encoder.image_encoder(cam).stored_shape, "float16")
            else:
                fields[f"images/{cam}"] = FieldSpec(shape, "uint8")
        self.fields = fields
        self.online = ReplayBuffer(cfg.replay_capacity, fields, agent.action_dim)
        self.demo = ReplayBuffer(cfg.replay_capacity, fields, agent.action_dim)
        self.assembler = EpisodeAssembler()
        self._queue: list[tuple[str, dict | None, dict, dict, dict | None]] = []
        self._prev: dict[str, dict] = {}
        # demo_successes: each stream's open episode, (obs fields or None, next fields, step kwargs).
        self._episode: dict[str, list[tuple[dict | None, dict, dict]]] = {}

    # ---- actor steps ---------------------------------------------------------------------------

    def add_step(self, msg: wire.Step) -> None:
        obs = None if msg.obs_state is None else self._raw(msg.obs_state, msg.obs_images)
        nxt = self._raw(msg.next_state, msg.next_images)
        kw = dict(action=np.asarray(msg.action, np.float32), reward=msg.reward, terminated=msg.terminated,
                  truncated=msg.truncated, intervention=msg.intervention, grasp_penalty=msg.grasp_penalty, seq=msg.seq)
        self._queue.append(("actor", obs, nxt, kw, msg.episode_stats))
        if not self.embed or len(self._queue) >= EMBED_BATCH:
            self.flush()

    def flush(self) -> None:
        """Insert queued steps (embedding their frames in one batch when the backbone is frozen)."""
        if not self._queue:
            return
        queue, self._queue = self._queue, []
        raws = [r for _, obs, nxt, _, _ in queue for r in (obs, nxt) if r is not None]
        fields = iter(self._fields(raws))
        for stream, obs, _, kw, stats in queue:
            obs_fields = next(fields) if obs is not None else None
            next_fields = next(fields)
            if obs_fields is None and stream not in self._prev:
                raise ValueError(f"step {kw['seq']} continues an episode whose start never arrived")
            prev = obs_fields if obs_fields is not None else self._prev[stream]
            self.assembler.step(self.online, stream, obs_fields, next_fields, **kw)
            self._add_takeover(stream, prev, obs_fields is not None, next_fields, kw)
            self._prev[stream] = next_fields
            if self.cfg.demo_successes:
                self._keep_success(stream, obs_fields, next_fields, kw, stats)

    def _add_takeover(self, stream: str, obs_fields: dict, episode_start: bool, next_fields: dict, kw: dict) -> None:
        """HIL-SERL: human corrections also go into the demo buffer. Each takeover is one segment
        there (its first observation stored once, its steps linked for n-step returns); the segment
        ends where the policy takes back over, or with the episode."""
        segment = f"takeover:{stream}"
        # A new episode also closes a segment its predecessor left open (an actor restart mid-takeover).
        if episode_start or not kw["intervention"]:
            self.assembler.close(self.demo, segment)
        if kw["intervention"]:
            first = not self.assembler.is_open(self.demo, segment)
            self.assembler.step(self.demo, segment, obs_fields if first else None, next_fields, **kw)

    def _keep_success(self, stream: str, obs_fields: dict | None, next_fields: dict, kw: dict,
                      stats: dict | None) -> None:
        """Self-imitation: an episode the policy finished successfully on its own is copied, whole,
        into the demo buffer at its end (the BC term then also pulls toward the policy's own successes
        from states the recorded demos never visited). Episodes with interventions are not copied:
        their corrections are in the demo buffer already."""
        if obs_fields is not None:
            self._episode[stream] = []
        episode = self._episode.get(stream)
        if episode is None:  # an episode whose start arrived before a restart of this option
            return
        episode.append((obs_fields, next_fields, kw))
        if not (kw["terminated"] or kw["truncated"]):
            return
        del self._episode[stream]
        if stats and stats.get("success") and not any(k["intervention"] for _, _, k in episode):
            for obs_f, next_f, k in episode:
                self.assembler.step(self.demo, f"success:{stream}", obs_f, next_f, **k)

    # ---- recorded demos ------------------------------------------------------------------------

    def add_episode_file(self, ep: Episode) -> None:
        check_demo_compatible(self.layout, ep)
        t_max = len(ep)
        raws = []
        for t in range(t_max + 1):
            obs = ep.obs_at(t)
            images = self.layout.image_arrays(obs) if self.layout.images else {}
            raws.append(self._raw(self.layout.state_vector(obs), images))
        fields = self._fields(raws)
        stream = f"demo:{ep.path.name}"
        for t in range(t_max):
            self.assembler.step(self.demo, stream, fields[t] if t == 0 else None, fields[t + 1],
                                ep.arrays["action"][t], float(ep.arrays["reward"][t]),
                                terminated=bool(ep.arrays["terminated"][t]),
                                truncated=bool(ep.arrays["truncated"][t] or t == t_max - 1 and not ep.arrays["terminated"][t]))

    # ---- helpers -------------------------------------------------------------------------------

    def _raw(self, state: np.ndarray, images: dict[str, np.ndarray] | None) -> dict[str, Any]:
        """Buffer fields of one observation before embedding: "state", the layout's named vectors
        ("base_action" of a residual run) and "images/<cam>"."""
        state = np.asarray(state, np.float32)
        out = {"state": state, **self.layout.named_vectors(state)}
        for cam, img in (images or {}).items():
            out[f"images/{cam}"] = np.asarray(img, np.uint8)
        return out

    def _fields(self, raws: list[dict]) -> list[dict]:
        """Buffer fields of raw observations ({"state", "images/<cam>"}): embeddings computed in batches."""
        if not self.embed:
            return raws
        out = [{k: v for k, v in r.items() if not k.startswith("images/")} for r in raws]
        for (path, _) in self.layout.images:
            cam = path[-1]
            for start in range(0, len(raws), EMBED_BATCH):
                chunk = raws[start:start + EMBED_BATCH]
                images = torch.from_numpy(np.stack([r[f"images/{cam}"] for r in chunk])).to(self.device)
                emb = self.agent.encoder.embed(cam, images).cpu().numpy()
                for i, e in enumerate(emb):
                    out[start + i][f"embeddings/{cam}"] = e
        return out


def check_demo_compatible(layout: ObsLayout, ep: Episode) -> None:
    for path, _ in layout.images:
        if "obs/" + "/".join(path) not in ep.arrays:
            raise ConfigError(f"demo {ep.path} has no {'/'.join(path)} images: record pixel demos without --no-images")
    for path, size in layout.state:
        arr = ep.arrays.get("obs/" + "/".join(path))
        got = None if arr is None else int(np.prod(arr.shape[1:]))
        if got != size:
            found = "none" if got is None else f"{got} numbers"
            raise ConfigError(f"demo {ep.path} does not match the env's observation: {'/'.join(path)} should have "
                              f"{size} numbers per step, the demo has {found}. It was recorded with another task, "
                              "--privileged setting or an older robot_rl (pick_cube's twin gained cube_from_tcp_m on "
                              "2026-12-01): record the demos again with `robot-rl record`.")
