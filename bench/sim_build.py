"""The simulator's optional compiled engine: the same ``swarm/`` and ``wire/`` source, compiled with mypyc.

How this works: a copy of ``src/swarmcast`` goes to a cache directory named after a hash of every source file (and
the Python and mypyc versions); mypyc compiles the hot packages of that copy in place (``swarm/*.py`` and
``wire/*.py``, each becoming an extension module next to its ``.py``), and ``bench/sim.py --mypyc`` runs itself again
with that copy first on ``PYTHONPATH``. Nothing else changes: the simulator drives the very code it would interpret,
three to four times faster (docs/benchmarks.md, "Simulator speed"). A source file that changes makes a new hash, so
a build never serves code older than the tree it was made from.

``swarm/peer.py``: in an interpreted run the simulator subclasses ``PeerSession`` (``SimSession``: the SOURCE/SEEDER
status read off the handshake, as every simulated node is honest and holds no credential, and a hash by session
number so that a run depends on its seed only). A compiled class cannot have interpreted subclasses, so the copy's
``peer.py`` gets those same two overrides written into ``PeerSession`` itself (``_SIM_PATCH``) and is compiled
too; when its text no longer matches (someone changed those lines), it is left interpreted and the simulator
uses ``SimSession`` as before, only slower. Everything outside ``swarm/`` and ``wire/`` (transport, credential, ...)
stays interpreted: the simulator replaces ``PieceVerifier.verify`` at run time.

    python bench/sim_build.py            # build (or find) the compiled copy; prints its directory
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGES = ("swarm", "wire")  # compiled: where the simulator's time goes (the profile in docs/benchmarks.md)
# (text in swarm/peer.py, what the copy gets instead): SimSession's overrides, inside the class (see the module doc).
_SIM_PATCH = (
    (
        """    def is_source(self) -> bool:
        verified = self.credential.verified
        return verified is not None and verified.role is CredentialRole.SOURCE
""",
        """    def is_source(self) -> bool:  # bench/sim_build.py: the handshake's flag, as bench/sim.py's SimSession
        return bool(int(self.handshake.flags) & 1)  # HandshakeFlags.SOURCE

    def __hash__(self) -> int:  # bench/sim_build.py: by session number, as SimSession
        return self.key
""",
    ),
    (
        """    def is_seeder(self) -> bool:
        \"\"\"The source or a support node (the broadcaster's own machines).\"\"\"
        return self.credential.verified is not None
""",
        """    def is_seeder(self) -> bool:  # bench/sim_build.py: the handshake's flags, as SimSession
        return bool(int(self.handshake.flags) & 3)  # HandshakeFlags.SOURCE | HandshakeFlags.SEEDER
""",
    ),
)
PATCHED = "swarm/peer.py"
ENV = "SWARMCAST_SIM_MYPYC"  # set by ``sim.py --mypyc`` for the process it runs again on the compiled copy
BUILD_TIMEOUT = 3600.0  # seconds: gcc on the generated C takes minutes on a busy 2-core machine


class BuildError(RuntimeError):
    """mypyc is missing or failed: the message says which, and the simulator can still run interpreted."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "swarmcast" / "sim-mypyc"


def source_hash(src: Path = SRC) -> str:
    """Every file of the package, the Python version and mypyc's: what a build depends on."""
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(sys.version.encode())
    digest.update(_mypy_version().encode())
    for path in sorted((src / "swarmcast").rglob("*.py")):
        digest.update(str(path.relative_to(src)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _mypy_version() -> str:
    try:
        return importlib.metadata.version("mypy")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def patch_peer(package_root: Path) -> bool:
    """Write SimSession's overrides into the copy's ``PeerSession``; False (file untouched) when they do not apply."""
    path = package_root / "swarmcast" / PATCHED
    text = path.read_text()
    for old, _new in _SIM_PATCH:
        if text.count(old) != 1:
            return False
    for old, new in _SIM_PATCH:
        text = text.replace(old, new)
    path.write_text(text)
    return True


def compiled_modules(package_root: Path, *, peer_patched: bool) -> list[str]:
    """Relative paths (``swarmcast/swarm/core.py``, ...) of the modules mypyc compiles."""
    found = []
    for package in PACKAGES:
        for path in sorted((package_root / "swarmcast" / package).glob("*.py")):
            relative = f"{package}/{path.name}"
            if relative != PATCHED or peer_patched:
                found.append(f"swarmcast/{relative}")
    return found


def is_compiled(module: object) -> bool:
    """Whether an imported module is an extension module (the mypyc build) rather than its ``.py``."""
    return str(getattr(module, "__file__", "")).endswith(".so")


def build(src: Path = SRC, root: Path | None = None, *, log: Path | None = None) -> Path:
    """The directory to put first on ``PYTHONPATH``; built when no build of these sources exists yet."""
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        raise BuildError("mypyc needs a C compiler (gcc): none on PATH")
    if _mypy_version() == "none":
        raise BuildError("mypyc is not installed (pip install mypy)")
    root = root or cache_root()
    target = root / source_hash(src)
    if (target / "DONE").exists():
        return target
    work = root / f"{target.name}.tmp{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copytree(src / "swarmcast", work / "swarmcast", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    log_path = log or work / "build.log"
    with log_path.open("w") as out:
        try:
            command = [sys.executable, "-m", "mypyc", *compiled_modules(work, peer_patched=patch_peer(work))]
            result = subprocess.run(command, cwd=work, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT,
                                    check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise BuildError(f"mypyc took over {BUILD_TIMEOUT:.0f} s (log: {log_path})") from None
    if result.returncode != 0:
        raise BuildError(f"mypyc failed with exit {result.returncode} (log: {log_path})")
    shutil.rmtree(work / "build", ignore_errors=True)  # the generated C and objects: tens of MB, not needed
    (work / "DONE").write_text(source_hash(src) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)
    return target


def main() -> None:
    try:
        print(build())
    except BuildError as error:
        sys.exit(f"sim_build: {error}")


if __name__ == "__main__":
    main()
