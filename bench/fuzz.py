"""Long fuzz runs of our parsers: ``python bench/fuzz.py --target NAME|all --inputs N [--seed S]``.

Each input is a mutation of a valid encoding (tests/fuzz/targets.py has the targets, seeds and mutator), run
through the target's parser and timed. An exception that is not the target's own error is a crash; an input
that takes more than ``--hang`` seconds of CPU time is a hang (CPU, not wall time, so that other processes
on a shared machine do not make hangs up; wall time is reported too, and an input still running after
``--abort`` wall seconds is interrupted and counted as a hang). Inputs that parse without error join the corpus
(up to ``--corpus`` of them), so later mutations start from deeper valid states. Crashing and hanging inputs
are written to ``--crash-dir``. Prints one line per target; exits 1 on any crash or hang.

Reproduce the figures in docs/fuzzing.md with ``PYTHONPATH=src python bench/fuzz.py --target all
--inputs 1000000 --seed 1``.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.fuzz.targets

from tests.fuzz.targets import Target, all_targets, mutate


class _AbortedError(BaseException):
    """Raised by the wall-clock alarm inside an input that runs far too long (BaseException: no parser catches it)."""


@dataclass
class Result:
    name: str
    inputs: int = 0
    crashes: int = 0
    hangs: int = 0
    accepted: int = 0
    max_cpu: float = 0.0
    max_wall: float = 0.0
    wall: float = 0.0

    def line(self) -> str:
        rate = self.inputs / self.wall if self.wall else 0.0
        return (f"{self.name:15} inputs {self.inputs:>9}  crashes {self.crashes}  hangs {self.hangs}  "
                f"accepted {self.accepted:>8}  max cpu s {self.max_cpu:.4f}  max wall s {self.max_wall:.4f}  "
                f"wall s {self.wall:8.1f}  inputs/s {rate:8.0f}")  # fmt: skip


def _on_alarm(_signum: int, _frame: FrameType | None) -> None:
    raise _AbortedError


def _save(crash_dir: Path, name: str, kind: str, index: int, data: bytes) -> Path:
    crash_dir.mkdir(parents=True, exist_ok=True)
    path = crash_dir / f"{name}-{kind}-{index}.bin"
    path.write_bytes(data)
    return path


def fuzz(target: Target, inputs: int, seed: int, *, hang: float, abort: float, corpus_cap: int,
         crash_dir: Path, progress: float) -> Result:
    rng = random.Random(f"{seed}:{target.name}")
    corpus = list(target.seeds)
    result = Result(target.name)
    errors = target.errors
    run = target.run
    thread_time, perf_counter = time.thread_time, time.perf_counter
    started = last_report = perf_counter()
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        for index in range(inputs):
            data = mutate(rng, rng.choice(corpus), rng.choice(corpus))
            failure: str | None = None
            signal.setitimer(signal.ITIMER_REAL, abort)
            cpu0, wall0 = thread_time(), perf_counter()
            try:
                run(data)
            except errors:
                pass
            except _AbortedError:
                failure = "abort"
            except Exception:
                failure = traceback.format_exc(limit=-4)
            else:
                result.accepted += 1
                if len(corpus) < corpus_cap:
                    corpus.append(data)
                elif rng.random() < 0.01:
                    corpus[rng.randrange(len(target.seeds), corpus_cap)] = data  # keep the seeds, refresh the rest
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            cpu, wall = thread_time() - cpu0, perf_counter() - wall0
            result.inputs += 1
            result.max_cpu = max(result.max_cpu, cpu)
            result.max_wall = max(result.max_wall, wall)
            if failure is None and cpu > hang:
                failure = "hang"
            if failure in {"abort", "hang"}:
                result.hangs += 1
                path = _save(crash_dir, target.name, "hang", index, data)
                print(f"HANG {target.name} input {index}: {cpu:.3f} s CPU, {wall:.3f} s wall, saved to {path}",
                      file=sys.stderr)
            elif failure is not None:
                result.crashes += 1
                path = _save(crash_dir, target.name, "crash", index, data)
                print(f"CRASH {target.name} input {index} ({len(data)} bytes) {data[:200]!r}, saved to {path}\n"
                      f"{failure}", file=sys.stderr)
            if progress and wall0 - last_report > progress:
                last_report = wall0
                result.wall = wall0 - started
                print(f"... {result.line()}", file=sys.stderr, flush=True)
    finally:
        signal.signal(signal.SIGALRM, previous)
    result.wall = perf_counter() - started
    return result


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    names = sorted(all_targets())
    parser = argparse.ArgumentParser(description="Fuzz swarmcast's parsers with mutated valid inputs.")
    parser.add_argument("--target", required=True, choices=[*names, "all"], help="a target, or all one by one")
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs per target (default 100000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed: same seed, same inputs")
    parser.add_argument("--hang", type=float, default=0.1, help="CPU seconds per input that count as a hang")
    parser.add_argument("--abort", type=float, default=5.0, help="wall seconds after which an input is stopped")
    parser.add_argument("--corpus", type=int, default=256, help="most inputs kept to mutate further")
    parser.add_argument("--crash-dir", type=Path, default=Path("fuzz-crashes"), help="where failing inputs go")
    parser.add_argument("--progress", type=float, default=0.0, help="seconds between progress lines (0: none)")
    args = parser.parse_args(argv)
    if args.inputs < 1 or args.hang <= 0 or args.abort <= args.hang or args.corpus < 1:
        parser.error("--inputs and --corpus must be positive, --abort larger than --hang > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    targets = all_targets()
    names = sorted(targets) if args.target == "all" else [args.target]
    failed = False
    for name in names:
        result = fuzz(targets[name], args.inputs, args.seed, hang=args.hang, abort=args.abort,
                      corpus_cap=args.corpus, crash_dir=args.crash_dir, progress=args.progress)
        print(result.line(), flush=True)
        failed |= bool(result.crashes or result.hangs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
