"""Coverage-guided fuzzing of one target with atheris (libFuzzer), optional: ``pip install atheris``.

    PYTHONPATH=src python bench/fuzz_atheris.py --target NAME [libFuzzer flags, e.g. -runs=1000000 -max_len=4096]

The same targets as bench/fuzz.py (tests/fuzz/targets.py); their seeds are written to a fresh corpus directory
that libFuzzer then grows. An exception other than the target's own error is reported by libFuzzer as a crash,
with the input saved as ``crash-<sha1>`` in the working directory; ``-timeout=1`` turns a slow input into one too.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.fuzz.targets

from tests.fuzz.targets import all_targets


def main() -> None:
    import atheris  # optional, not a dependency (mypy: ignore_missing_imports in pyproject.toml)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, choices=sorted(all_targets()))
    args, libfuzzer_args = parser.parse_known_args()
    target = all_targets()[args.target]
    corpus = Path(tempfile.mkdtemp(prefix=f"atheris-{target.name}-"))
    for index, seed in enumerate(target.seeds):
        (corpus / f"seed-{index}").write_bytes(seed)
    errors = target.errors

    def one_input(data: bytes) -> None:
        with contextlib.suppress(*errors):
            target.run(data)

    atheris.instrument_all()
    atheris.Setup([sys.argv[0], *libfuzzer_args, str(corpus)], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
