"""Writable per-user caches for matplotlib, Hugging Face and TemplateFlow, whoever runs llmfbn.

In a container llmfbn runs as whatever user ``docker run -u UID:GID`` or Apptainer gives it,
often on a read-only image, with a ``HOME`` that may be ``/`` and a ``/tmp`` shared by every
user of the node (Apptainer binds the host's). The libraries' default caches then either
cannot be written (matplotlib warns and makes a throw-away folder on every run) or are
created by the first user under a fixed name in the shared ``/tmp`` and are not writable for
the next one.

:func:`use_writable_caches` runs before any of those libraries is imported (first thing in
``llmfbn`` and ``llmfbn-demo``). For each cache variable it leaves alone:

- a variable that is set: the user's own choice, or an image's pre-filled read-only cache
  (e.g. ``TEMPLATEFLOW_HOME=/opt/templateflow``); Hugging Face's ``HF_HUB_CACHE`` is never
  touched either, so a pre-filled read-only model cache keeps working;
- a library default that this user can write and that does not have to be created directly
  in a shared sticky folder such as ``/tmp`` (a plain install keeps ``~/.cache``).

Otherwise the variable points at ``<tmp>/llmfbn-<uid>/<name>``, a folder of this user only
(mode 0700; ``<tmp>`` is ``$TMPDIR`` or ``/tmp``).
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path

LOGGER = logging.getLogger("llmfbn")

#: The cache variables handled, in the order they are decided (the later defaults derive
#: from XDG_CACHE_HOME), with the name of their folder under the per-user root.
CACHE_VARIABLES = (
    ("XDG_CACHE_HOME", "cache"),          # llmfbn's GGUF copies, torch, anything XDG
    ("HF_HOME", "huggingface"),
    ("TEMPLATEFLOW_HOME", "templateflow"),
    ("MPLCONFIGDIR", "matplotlib"),
)


def library_default(name: str, environ) -> Path:
    """Where the library behind the cache variable ``name`` puts its cache when the variable
    is unset, given the other variables in ``environ`` (``HOME``, ``XDG_*``)."""
    home = Path(environ.get("HOME") or "/")
    xdg_cache = Path(environ.get("XDG_CACHE_HOME") or home / ".cache")
    defaults = {
        "XDG_CACHE_HOME": home / ".cache",
        "HF_HOME": xdg_cache / "huggingface",
        "TEMPLATEFLOW_HOME": xdg_cache / "templateflow",
        # matplotlib keeps its config and its font cache here when MPLCONFIGDIR is unset
        "MPLCONFIGDIR": Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "matplotlib",
    }
    return defaults[name]


def usable(path: Path) -> bool:
    """True when this user can write ``path``, or create it without making a fixed-name
    folder directly in a shared sticky folder (``/tmp``), where the next user would find it
    owned by someone else."""
    path = Path(os.path.abspath(path))
    if path.exists():
        return path.is_dir() and os.access(path, os.W_OK | os.X_OK)
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        return False
    return not parent.stat().st_mode & stat.S_ISVTX


def per_user_root() -> Path:
    """``<tmp>/llmfbn-<uid>``, created with mode 0700 and owned by this user; a fresh
    ``llmfbn-<uid>-XXXX`` folder when that name is taken by something else (another user's
    folder or a link planted in a shared ``/tmp``)."""
    uid = os.geteuid()
    root = Path(tempfile.gettempdir()) / f"llmfbn-{uid}"
    try:
        root.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = root.lstat()
    if stat.S_ISDIR(info.st_mode) and info.st_uid == uid and os.access(root, os.W_OK | os.X_OK):
        return root
    return Path(tempfile.mkdtemp(prefix=f"llmfbn-{uid}-"))


def use_writable_caches(environ=None) -> dict[str, str]:
    """Point the unset cache variables whose library default is not usable at folders of
    this user (see the module docstring); call before matplotlib, transformers,
    huggingface_hub or templateflow are imported.

    Parameters
    ----------
    environ : mutable mapping, optional
        The environment to read and change (default: ``os.environ``).

    Returns
    -------
    changed : dict
        ``{variable: folder}`` for each variable that was set; empty when every default was
        usable, or when no per-user folder could be made (the libraries then fall back as
        they do on their own).
    """
    environ = os.environ if environ is None else environ
    changed: dict[str, str] = {}
    root = None
    for name, folder in CACHE_VARIABLES:
        if environ.get(name) or usable(library_default(name, environ)):
            continue
        try:
            root = root or per_user_root()
            target = root / folder
            target.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            LOGGER.debug("no per-user cache folder for %s: %s", name, exc)
            return changed
        environ[name] = changed[name] = str(target)
    if changed:
        LOGGER.info("Caches not writable at their defaults, using %s",
                    ", ".join(f"{k}={v}" for k, v in changed.items()))
    return changed
