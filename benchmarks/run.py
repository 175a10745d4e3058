"""Run every benchmark and print a Markdown report; `--write` also stores it in RESULTS.md.

Run it from the repository root as `python -m benchmarks.run` (or `make bench`), so that the
repository root is on sys.path.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import audit_scale, cold_init, geo, verify_cpu
from benchmarks import request_counts as aws_requests

RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
BEGIN_MARKER = "<!-- results: begin -->"
END_MARKER = "<!-- results: end -->"


def cpu_model() -> str:
    """Return the CPU model named in /proc/cpuinfo, or the architecture if it names none."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    for key in ("model name", "Hardware", "Processor", "cpu model"):
        for line in lines:
            name, _, value = line.partition(":")
            if name.strip() == key and value.strip():
                return value.strip()
    return platform.machine()


def code_version() -> str:
    """Return the measured commit and the count of changed files outside benchmarks/."""
    root = RESULTS_PATH.parent.parent

    def git(*args: str) -> str:
        result = subprocess.run(  # noqa: S603 - fixed arguments
            ["git", "--no-optional-locks", *args],  # noqa: S607 - git from PATH
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "an unknown commit"
    changed = [
        line for line in git("status", "--porcelain").splitlines() if "benchmarks/" not in line
    ]
    suffix = f", with {len(changed)} changed files outside benchmarks/" if changed else ""
    return f"commit `{commit}`{suffix}"


def machine_line(started: datetime, elapsed_s: float) -> str:
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    core_text = f"{cores} cores" if usable == cores else f"{cores} cores ({usable} usable)"
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return (
        f"Measured on {started:%Y-%m-%d %H:%M} UTC: `{platform.machine()}`, {cpu_model()}, "
        f"{core_text}, {python}, {platform.system()} {platform.release()}; "
        f"code at {code_version()}. The whole run took {elapsed_s:.0f} s."
    )


def report(
    *,
    started: datetime,
    elapsed_s: float,
    requests: aws_requests.RequestsResult,
    cold: cold_init.ColdInitResult,
    cpu: verify_cpu.CpuResult,
    geolocation: geo.GeoResult,
    audit: audit_scale.AuditScaleResult,
) -> str:
    sections = [
        "## Results",
        machine_line(started, elapsed_s),
        "### 1. AWS requests per operation",
        requests.markdown(),
        "### 2. Cold init per function",
        cold.markdown(),
        "### 3. CPU per verification",
        cpu.markdown(),
        "### 4. Geolocation",
        geolocation.markdown(),
        "### 5. Sealing and verifying a month of audit events",
        audit.markdown(),
    ]
    return "\n\n".join(sections) + "\n"


def write_results(
    text: str,
    path: Path = RESULTS_PATH,
    *,
    begin_marker: str = BEGIN_MARKER,
    end_marker: str = END_MARKER,
) -> None:
    """Replace what lies between two marker lines of RESULTS.md with `text`."""
    document = path.read_text(encoding="utf-8")
    head, begin, rest = document.partition(begin_marker)
    _, end, tail = rest.partition(end_marker)
    if not begin or not end:
        raise SystemExit(
            f"{path} is missing the lines {begin_marker} and {end_marker}: "
            "add them around the results section"
        )
    path.write_text(f"{head}{begin_marker}\n\n{text}\n{end_marker}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument(
        "--samples",
        type=int,
        default=cold_init.DEFAULT_SAMPLES,
        help="fresh processes per function and for boto3 in the cold-init benchmark "
        f"(default {cold_init.DEFAULT_SAMPLES})",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=verify_cpu.DEFAULT_ITERATIONS,
        help=f"timed calls in the CPU benchmark (default {verify_cpu.DEFAULT_ITERATIONS})",
    )
    parser.add_argument(
        "--write", action="store_true", help=f"replace the results section of {RESULTS_PATH.name}"
    )
    args = parser.parse_args(argv)

    started = datetime.now(UTC)
    clock_start = time.monotonic()
    # The quietest first: CPU time is read before the local stack starts any thread.
    print("measuring CPU per verification...", file=sys.stderr)
    cpu = verify_cpu.measure(args.iterations)
    print("measuring cold init...", file=sys.stderr)
    cold = cold_init.measure(args.samples)
    print("counting AWS requests per operation...", file=sys.stderr)
    requests = aws_requests.measure()
    print("measuring geolocation...", file=sys.stderr)
    geolocation = geo.measure()
    print("sealing and verifying a month of audit events...", file=sys.stderr)
    audit = audit_scale.measure()
    text = report(
        started=started,
        elapsed_s=time.monotonic() - clock_start,
        requests=requests,
        cold=cold,
        cpu=cpu,
        geolocation=geolocation,
        audit=audit,
    )
    print(text, end="")
    if args.write:
        write_results(text)
        print(f"wrote {RESULTS_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
