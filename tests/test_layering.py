"""Import rules, read from the source (module-level and function-level imports alike):

- the robot-PC packages run without torch and never import the learner side;
- the learner side depends one way: agents ← envs ← teleop ← learning ← finetune, rewards ← bench ← cli
  (a package imports only base modules, its own package and packages to its left);
- no import cycles among learner-side modules.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "robot_rl"
ROBOT_PC = ("arms", "bridge", "control", "drivers", "ros2", "twin")
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
        for pkg in ("arms", "bridge", "control", "drivers", "twin"):
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


# ---- learner side -------------------------------------------------------------------------------

BASE = ("errors", "config", "cpu", "paths", "atomic", "task_spec", "data", *ROBOT_PC)
"""Importable from anywhere: the shared base modules and the robot PC's torch-free packages."""
LEARNER_ORDER = {"agents": 1, "envs": 2, "teleop": 3, "learning": 4, "finetune": 5, "rewards": 5,
                 "bench": 6, "cli": 7}
"""Rank of each learner-side package: it may import lower ranks only (same rank, other package: no)."""
DYNAMIC_REF = re.compile(r"^robot_rl(\.\w+)+:\w+$")
"""String references that import lazily ("robot_rl.envs.robot_env:RobotEnv", the CLI's command table)."""


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def robot_rl_imports(path: Path, root: Path) -> list[tuple[str, int]]:
    """(imported robot_rl module, line) of every import in `path`, anywhere in the file, relative
    imports resolved, plus "robot_rl.x.y:Name" string references."""
    modules = {module_name(p, root) for p in root.rglob("*.py")}
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for a in node.names:  # `from pkg import module` imports the module, `from module import Name` the module
                out.append((f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base, node.lineno))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and DYNAMIC_REF.match(node.value):
            out.append((node.value.split(":")[0], node.lineno))
    return sorted({(name, line) for name, line in out if name in modules})


def layering_violations(root: Path) -> list[str]:
    """Every import of a learner-side module that points up or sideways in LEARNER_ORDER."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        src = module_name(path, root).split(".")
        if len(src) < 2 or src[1] not in LEARNER_ORDER and src[1] not in BASE:
            continue
        for name, line in robot_rl_imports(path, root):
            dst = name.split(".")[1] if "." in name else None
            if dst is None or dst == src[1] or dst in BASE:
                continue
            src_rank = LEARNER_ORDER.get(src[1], 0)
            if dst not in LEARNER_ORDER or LEARNER_ORDER[dst] >= src_rank:
                bad.append(f"{path.relative_to(root.parent)}:{line} ({src[1]}) imports {name} ({dst})")
    return bad


def import_cycles(root: Path, packages: tuple[str, ...]) -> list[list[str]]:
    """Cycles in the module import graph (function-level imports included) among `packages`."""
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if name.split(".")[1:2] and name.split(".")[1] in packages:
            deps = set()
            for target, _ in robot_rl_imports(path, root):
                if target != name and target.split(".")[1:2] and target.split(".")[1] in packages:
                    deps.add(target)
            graph[name] = deps
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(nxt_ := node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[nxt_] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return cycles


def test_learner_side_depends_one_way():
    assert layering_violations(PKG) == []


def test_no_import_cycles_on_the_learner_side():
    assert import_cycles(PKG, tuple(LEARNER_ORDER)) == []


def test_the_layering_check_catches_back_edges_and_cycles(tmp_path):
    """The checks above on a small tree: a function-level import from agents up into learning, a
    string reference from envs into finetune, and a cycle between two learning modules."""
    root = tmp_path / "robot_rl"
    files = {
        "__init__.py": "",
        "errors.py": "",
        "agents/__init__.py": "",
        "agents/sac.py": "from robot_rl.errors import ConfigError\n"
                         "def f():\n    from robot_rl.learning.replay import ReplayBuffer\n",
        "envs/__init__.py": "",
        "envs/make.py": "from robot_rl.agents.sac import f\nENTRY = 'robot_rl.finetune.run:run'\n",
        "learning/__init__.py": "",
        "learning/replay.py": "from robot_rl.learning import actor\n",
        "learning/actor.py": "def g():\n    from .replay import ReplayBuffer\n",
        "finetune/__init__.py": "",
        "finetune/run.py": "from robot_rl.learning.actor import g\nfrom robot_rl.envs import make\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    bad = layering_violations(root)
    assert bad == ["robot_rl/agents/sac.py:3 (agents) imports robot_rl.learning.replay (learning)",
                   "robot_rl/envs/make.py:2 (envs) imports robot_rl.finetune.run (finetune)"]
    cycles = {frozenset(c) for c in import_cycles(root, tuple(LEARNER_ORDER))}
    assert cycles == {frozenset({"robot_rl.learning.actor", "robot_rl.learning.replay"}),
                      frozenset({"robot_rl.envs.make", "robot_rl.finetune.run"})}
