"""Tests for bids_app.caches: writable per-user caches whoever runs llmfbn.

The unit tests change a copy of the environment; the last tests start Python as two other
users sharing one sticky temporary folder (as Apptainer's shared /tmp is), with a home they
cannot write, and check that matplotlib, Hugging Face and TemplateFlow all get folders of
their own (they need root to switch users and skip without it).
"""

from __future__ import annotations

import json
import os
import shutil
import site
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bids_app.caches import CACHE_VARIABLES, library_default, usable, use_writable_caches

REPO = Path(__file__).resolve().parents[1]
NAMES = [name for name, _ in CACHE_VARIABLES]


@pytest.fixture
def shared_tmp(tmp_path, monkeypatch):
    """A sticky, world-writable folder used as the temporary folder, like /tmp."""
    folder = tmp_path / "shared-tmp"
    folder.mkdir()
    folder.chmod(0o1777)
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_defaults_follow_home_and_xdg():
    env = {"HOME": "/home/u"}
    assert library_default("XDG_CACHE_HOME", env) == Path("/home/u/.cache")
    assert library_default("HF_HOME", env) == Path("/home/u/.cache/huggingface")
    assert library_default("TEMPLATEFLOW_HOME", env) == Path("/home/u/.cache/templateflow")
    assert library_default("MPLCONFIGDIR", env) == Path("/home/u/.config/matplotlib")
    env = {"HOME": "/home/u", "XDG_CACHE_HOME": "/c", "XDG_CONFIG_HOME": "/k"}
    assert library_default("HF_HOME", env) == Path("/c/huggingface")
    assert library_default("MPLCONFIGDIR", env) == Path("/k/matplotlib")


def test_a_writable_home_is_left_alone(tmp_path, shared_tmp):
    """A plain install keeps the user's ~/.cache (shared with their other tools)."""
    env = {"HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    assert use_writable_caches(env) == {}
    assert set(env) == {"HOME"}
    assert not list(shared_tmp.iterdir())


def test_a_home_in_a_shared_sticky_folder_is_not_used(shared_tmp):
    """HOME=/tmp (a shared sticky folder): the first user would create /tmp/.cache and the
    next one could not write it; every cache goes to this user's own folder instead."""
    env = {"HOME": str(shared_tmp)}
    changed = use_writable_caches(env)
    root = shared_tmp / f"llmfbn-{os.geteuid()}"
    assert changed == {"XDG_CACHE_HOME": str(root / "cache"),
                       "MPLCONFIGDIR": str(root / "matplotlib")}
    # HF and TemplateFlow follow XDG_CACHE_HOME, now this user's own folder
    assert usable(library_default("HF_HOME", env))
    assert usable(library_default("TEMPLATEFLOW_HOME", env))
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert root.stat().st_uid == os.geteuid()
    assert all(Path(p).is_dir() for p in changed.values())
    assert not (shared_tmp / ".cache").exists()


def test_explicit_settings_are_honoured_even_read_only(tmp_path, shared_tmp):
    """A user's own setting, or an image's pre-filled read-only cache, is never replaced."""
    prefilled = tmp_path / "opt-templateflow"
    prefilled.mkdir()
    prefilled.chmod(0o555)
    env = {"HOME": str(shared_tmp), "TEMPLATEFLOW_HOME": str(prefilled),
           "MPLCONFIGDIR": "/somewhere/else", "XDG_CACHE_HOME": str(tmp_path / "xdg"),
           "HF_HOME": str(tmp_path / "hf")}
    before = dict(env)
    assert use_writable_caches(env) == {}
    assert env == before


def test_a_taken_per_user_name_is_not_used(shared_tmp):
    """Someone planted a link at <tmp>/llmfbn-<uid>: a fresh private folder is used."""
    target = shared_tmp / "elsewhere"
    target.mkdir()
    (shared_tmp / f"llmfbn-{os.geteuid()}").symlink_to(target)
    changed = use_writable_caches({"HOME": str(shared_tmp)})
    folder = Path(changed["MPLCONFIGDIR"]).parent
    assert folder.parent == shared_tmp and folder.name.startswith(f"llmfbn-{os.geteuid()}-")
    assert not folder.is_symlink() and stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert not list(target.iterdir())


def test_the_command_line_sets_caches_before_the_libraries_load():
    """``llmfbn`` and ``llmfbn-demo`` import none of the libraries that read these
    variables at import time before their main() has set them."""
    code = ("import sys, bids_app.cli.run, bids_app.demo; "
            "print([m for m in ('matplotlib', 'huggingface_hub', 'transformers', "
            "'templateflow') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------------------------
# two users sharing one /tmp, with a home they cannot write (as in a container)

_CHILD = r"""
import json, os, sys
if sys.argv[1] == "llmfbn":
    from bids_app.caches import use_writable_caches
    use_writable_caches()
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
plt.figure().savefig(os.path.join(os.environ["TMPDIR"], f"fig-{os.getuid()}.png"))
import huggingface_hub.constants as hf
import templateflow.conf as tf
print(json.dumps({"mpl": matplotlib.get_configdir(), "mpl_cache": matplotlib.get_cachedir(),
                  "hf": hf.HF_HOME, "tf": str(tf.TF_HOME)}))
"""


_PYTHON: list[str] | None = None


def _python_for_other_users() -> list[str] | None:
    """An interpreter another user can start with this environment's packages: this one,
    or (when it lives in a private folder, e.g. root's pyenv) the system Python of the same
    version with this environment's site-packages on its path."""
    paths = os.pathsep.join([str(REPO), *site.getsitepackages()])
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, f"/usr/bin/{version}"):
        try:
            probe = subprocess.run(
                [python, "-c", "import matplotlib, huggingface_hub, importlib.util as u; "
                 "assert u.find_spec('templateflow')"],
                env={"PYTHONPATH": paths, "HOME": "/"}, user=65534, group=65534, cwd="/",
                capture_output=True, timeout=120)
        except (PermissionError, FileNotFoundError):
            continue
        if probe.returncode == 0:
            return [python, paths]
    return None


def _as_user(uid: int, shared: Path, home: Path, mode: str) -> tuple[dict, str]:
    python, paths = _PYTHON
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "TMPDIR": str(shared), "PYTHONPATH": paths, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([python, "-c", _CHILD, mode], capture_output=True,
                            text=True, env=env, user=uid, group=uid, cwd=shared, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


@pytest.fixture
def two_users_shared_tmp():
    global _PYTHON
    if os.geteuid() != 0:
        pytest.skip("switching to other users needs root")
    _PYTHON = _PYTHON or _python_for_other_users()
    if _PYTHON is None:
        pytest.skip("no Python interpreter with this environment's packages that other "
                    "users may run")
    # not under pytest's tmp_path: its parents are private to root
    top = Path(tempfile.mkdtemp(prefix="llmfbn-test-caches-"))
    top.chmod(0o755)
    shared = top / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    home = top / "root-owned-home"  # like HOME=/ in `docker run -u`: not theirs
    home.mkdir(mode=0o755)
    yield shared, home
    shutil.rmtree(top)


@pytest.mark.slow
def test_without_the_fix_a_second_user_cannot_write_the_caches(two_users_shared_tmp):
    """The failure this module prevents, reproduced: HOME=/tmp shared by two users."""
    shared, _ = two_users_shared_tmp
    _as_user(23401, shared, shared, "plain")
    _, stderr = _as_user(23402, shared, shared, "plain")
    assert "is not a writable directory" in stderr  # matplotlib's complaint


@pytest.mark.slow
@pytest.mark.parametrize("home_kind", ["not writable", "the shared tmp"])
def test_two_users_each_get_their_own_writable_caches(two_users_shared_tmp, home_kind):
    shared, home = two_users_shared_tmp
    if home_kind == "the shared tmp":
        home = shared
    seen = {}
    for uid in (23411, 23412):
        where, stderr = _as_user(uid, shared, home, "llmfbn")
        assert "not a writable directory" not in stderr, stderr
        own = shared / f"llmfbn-{uid}"
        assert own.stat().st_uid == uid and stat.S_IMODE(own.stat().st_mode) == 0o700
        for key in ("mpl", "mpl_cache", "hf", "tf"):
            assert Path(where[key]).is_relative_to(own), (key, where[key])
        seen[uid] = where
    assert seen[23411]["hf"] != seen[23412]["hf"]
    assert sorted(p.name for p in shared.iterdir() if p.is_dir()) == [
        "llmfbn-23411", "llmfbn-23412"]
