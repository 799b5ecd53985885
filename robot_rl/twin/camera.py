"""Twin cameras: render the task's MJCF cameras headless from control-loop snapshots.

The renderer owns its own MjModel and MjData (built from the same scene files as the physics),
so rendering never touches the physics data: it copies the snapshot's simulator state (qpos and
mocap poses) and runs kinematics only. Shadows and multisampling are off (the shadow map is the
main cost on a CPU, see ../shared/NOTES.md). Colours and lights are randomized at each reset.

Threading: an OpenGL context belongs to the thread that made it, so one thread makes every call.
A stepped server renders on request from its thread (fresh, synchronous frames); streaming
cameras run this class in a process of their own (`twin/camera_stream.py`).
"""

from __future__ import annotations

import threading
import time

import mujoco
import numpy as np

from robot_rl.drivers.camera import Frame, ImageTransform
from robot_rl.errors import ConfigError
from robot_rl.task_spec import CameraSpec
from robot_rl.twin import scene as sc


class TwinCameras:
    """`FrameSource` rendering the twin. See the module docstring for threading."""

    def __init__(self, source: sc.SceneSource, cameras: tuple[CameraSpec, ...], *,
                 randomize_visuals: bool = True, crop: dict[str, tuple[int, int, int, int]] | None = None) -> None:
        self.model = sc.build_model(source)
        self.data = mujoco.MjData(self.model)
        self.specs = {c.name: c for c in cameras}
        for c in cameras:
            if mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, c.name) < 0:
                names = [self.model.camera(i).name for i in range(self.model.ncam)]
                raise ConfigError(f"camera {c.name!r} is not in the twin scene {source.scene}; it has {names}")
        # Render at the requested size unless a crop asks for a larger source image.
        self.transforms = {c.name: ImageTransform(c.height, c.width, (crop or {}).get(c.name)) for c in cameras}
        self.randomize_visuals = randomize_visuals
        self._base_rgba = self.model.geom_rgba.copy()
        self._base_light_pos = self.model.light_pos.copy()
        self._base_light_diffuse = self.model.light_diffuse.copy()
        robot = sc.subtree_bodies(self.model, self.model.body(sc.ROBOT_ROOT_BODY).id)
        self._scene_geoms = np.flatnonzero(~sc.geom_mask(self.model, robot))
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._gl_thread: int | None = None
        self._seq = 0

    # ---- FrameSource ---------------------------------------------------------------------------

    def camera_sizes(self) -> dict[str, tuple[int, int]]:
        return {n: (c.height, c.width) for n, c in self.specs.items()}

    def frames(self, names: tuple[str, ...], sim_state: np.ndarray | None, t_ns: int) -> list[Frame]:
        if sim_state is None:
            raise ValueError("a stepped twin renders from a simulator state; got None")
        return self._render(names, sim_state, t_ns)

    def on_reset(self, seed: int) -> None:
        self._randomize(seed)

    def close(self) -> None:
        # GL contexts can only be released by the thread that made them; from any other thread
        # leave them to process exit rather than fail.
        if self._gl_thread == threading.get_ident():
            for r in self._renderers.values():
                r.close()
        self._renderers.clear()

    # ---- internals -----------------------------------------------------------------------------

    def _renderer(self, height: int, width: int) -> mujoco.Renderer:
        key = (height, width)
        r = self._renderers.get(key)
        if r is None:
            try:
                r = mujoco.Renderer(self.model, height, width)
            except Exception as exc:
                raise RuntimeError(
                    f"cannot create a {width}x{height} MuJoCo renderer ({exc}). Headless machines need "
                    "MUJOCO_GL=egl (or osmesa) set before mujoco is first imported, and the EGL packages "
                    "(apt install libegl1 libegl-mesa0 libgl1-mesa-dri)") from exc
            self._gl_thread = threading.get_ident()
            r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
            r.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
            self._renderers[key] = r
        return r

    def _render(self, names: tuple[str, ...], sim_state: np.ndarray, t_ns: int) -> list[Frame]:
        sc.load_sim_state(self.model, self.data, sim_state)
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)
        out = []
        for name in names:
            spec = self.specs[name]
            tr = self.transforms[name]
            h, w = (spec.height, spec.width) if tr.crop_xywh is None else (self.model.vis.global_.offheight,
                                                                           self.model.vis.global_.offwidth)
            r = self._renderer(h, w)
            r.update_scene(self.data, camera=name)
            image = tr.apply(r.render())
            self._seq += 1
            out.append(Frame(name, self._seq, t_ns, time.monotonic_ns(), image))
        return out

    def _randomize(self, seed: int) -> None:
        if not self.randomize_visuals:
            return
        rng = np.random.default_rng(seed + 7919)  # decorrelated from the physics randomization
        m = self.model
        rgba = self._base_rgba.copy()
        g = self._scene_geoms
        rgba[g, :3] = np.clip(rgba[g, :3] * rng.uniform(0.7, 1.3, (len(g), 3)), 0.0, 1.0)
        m.geom_rgba[:] = rgba
        m.light_pos[:] = self._base_light_pos + rng.uniform(-0.3, 0.3, self._base_light_pos.shape)
        m.light_diffuse[:] = np.clip(self._base_light_diffuse * rng.uniform(0.6, 1.4, (m.nlight, 1)), 0.0, 1.0)
