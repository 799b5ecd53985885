"""The robot-PC packages run without torch and never import the learner side."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "robot_rl"
ROBOT_PC = ("bridge", "control", "drivers", "twin")
LEARNER_SIDE = ("robot_rl.envs", "robot_rl.teleop", "robot_rl.data", "robot_rl.bench", "robot_rl.cli",
                "robot_rl.agents", "robot_rl.learning", "robot_rl.rewards")


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", ROBOT_PC)
def test_robot_pc_code_imports_neither_torch_nor_learner_modules(package):
    for path in (PKG / package).rglob("*.py"):
        for name in imports_of(path):
            assert not name.startswith("torch"), f"{path} imports {name}"
            assert not name.startswith(LEARNER_SIDE), f"{path} (robot PC) imports {name} (learner side)"


def test_robot_pc_serves_with_torch_unimportable():
    """Block `import torch` outright, then import every robot-PC module and serve one step."""
    code = textwrap.dedent("""
        import importlib, pkgutil, sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is not installed on this robot PC")
        sys.meta_path.insert(0, NoTorch())
        import robot_rl
        for pkg in ("bridge", "control", "drivers", "twin"):
            mod = importlib.import_module(f"robot_rl.{pkg}")
            for info in pkgutil.iter_modules(mod.__path__):
                importlib.import_module(f"robot_rl.{pkg}.{info.name}")
        import numpy as np
        from robot_rl.bridge.serve import ServeConfig, start_server
        from robot_rl.bridge.client import BridgeClient
        stack = start_server(ServeConfig(bind="tcp://127.0.0.1:0", pub_bind=""))
        with BridgeClient(stack.address) as c:
            c.reset(seed=0)
            obs = c.step(np.zeros(6), hold_s=0.1, cameras=("wrist",))
        stack.close()
        assert "torch" not in sys.modules
        print("ok", obs.state.mode, obs.frames[0].image.shape)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok track (128, 128, 3)"
