"""Cold init of each Lambda function, compared with `import boto3`.

Every sample is a fresh interpreter (`python -c`). A function sample times, inside the child,
what Lambda runs before the first request: loading `functions/<name>/app.py` with importlib,
then `mfa_core.runtime.services()` and the clients that function uses. A boto3 sample times
`import boto3` alone. Interpreter start-up is outside both timers.

The children get the function's environment from template.yaml, fake credentials, and
AWS_ENDPOINT_URL=http://127.0.0.1:9: building a client sends no request, so nothing listens
there. PYTHONDONTWRITEBYTECODE=1 keeps the repository free of .pyc files; installed packages
load from their existing .pyc files, and the repository's own modules are compiled on each
start. One untimed round goes first, so the file cache is warm. Then the samples of boto3 and
of the functions alternate, in an order that rotates every round.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.template import Template, load_template

ROOT = Path(__file__).resolve().parent.parent
LAYER_PATH = ROOT / "layers" / "mfa_core"
DEFAULT_SAMPLES = 15
TARGET_RATIO = 1.4
TOP_MODULES = 10
IMPORTTIME_RUNS = 5
BOTO3 = "boto3"

# The Services members that each function builds, from its routes in functions/<name>/app.py.
FUNCTION_CLIENTS: dict[str, tuple[str, ...]] = {
    "session": ("store", "secrets_manager", "ssm"),
    "enroll": ("store", "kms", "ssm"),
    "verify": ("store", "kms", "secrets_manager", "ssm"),
    "admin": ("store", "ssm"),
    "authorizer": ("store", "ssm"),
}
# Functions whose handler is not functions/<name>/app.py: the folder and the module file.
FUNCTION_MODULES: dict[str, tuple[str, str]] = {"authorizer": ("session", "authorizer.py")}

# Prints the nanoseconds spent importing the app module, then building its clients. The line on
# stderr separates the interpreter's own start-up imports from the timed ones under importtime.
TIMED_MARKER = "timed code starts"
_FUNCTION_SCRIPT = f"""\
import importlib.util, sys, time
path, name, *members = sys.argv[1:]
print("{TIMED_MARKER}", file=sys.stderr, flush=True)
started = time.perf_counter_ns()
spec = importlib.util.spec_from_file_location(name, path)
module = importlib.util.module_from_spec(spec)
sys.modules[name] = module
spec.loader.exec_module(module)
imported = time.perf_counter_ns()
from mfa_core import runtime
svc = runtime.services()
for member in members:
    getattr(svc, member)
built = time.perf_counter_ns()
print(imported - started, built - imported)
"""

_BOTO3_SCRIPT = f"""\
import sys, time
print("{TIMED_MARKER}", file=sys.stderr, flush=True)
started = time.perf_counter_ns()
import boto3
print(time.perf_counter_ns() - started, 0)
"""


@dataclass(frozen=True)
class Sample:
    import_ns: int
    clients_ns: int

    @property
    def total_ns(self) -> int:
        return self.import_ns + self.clients_ns


@dataclass(frozen=True)
class ImportEntry:
    module: str
    self_us: int
    cumulative_us: int
    depth: int


@dataclass(frozen=True)
class ColdInitResult:
    samples: dict[str, list[Sample]]
    slowest: str
    imports: list[ImportEntry]
    boto3_modules: frozenset[str]

    def median_ms(self, name: str, part: str = "total") -> float:
        values: list[int] = [getattr(sample, f"{part}_ns") for sample in self.samples[name]]
        return float(statistics.median(values)) / 1e6

    def ratio(self, name: str) -> float:
        return self.median_ms(name) / self.median_ms(BOTO3)

    def markdown(self) -> str:
        count = len(self.samples[BOTO3])
        boto3_ms = self.median_ms(BOTO3)
        lines = [
            f"Median of {count} fresh processes each; `import boto3` took **{boto3_ms:.1f} ms**.",
            "",
            "| Function | Members built | Import handler ms | Build clients ms | Total ms "
            f"| x boto3 | Target ≤ {TARGET_RATIO}x |",
            "| --- | --- | ---: | ---: | ---: | ---: | --- |",
        ]

        for name, members in FUNCTION_CLIENTS.items():
            ratio = self.ratio(name)
            verdict = "met" if ratio <= TARGET_RATIO else "**missed**"
            lines.append(
                f"| {name} | {', '.join(members)} | {self.median_ms(name, 'import'):.1f} "
                f"| {self.median_ms(name, 'clients'):.1f} | {self.median_ms(name):.1f} "
                f"| {ratio:.2f} | {verdict} |"
            )

        lines += [
            "",
            f"Where the time goes in the slowest function, **{self.slowest}**: the median of "
            f"{IMPORTTIME_RUNS} runs under `python -X importtime`, which adds overhead of its "
            "own. Depth 0 is a module that the timed code imported itself; a module's cumulative "
            "time includes the modules it imported.",
            "",
            "| Module, by cumulative import time | Depth | Cumulative ms | Self ms |",
            "| --- | ---: | ---: | ---: |",
        ]
        by_cumulative = sorted(self.imports, key=lambda e: e.cumulative_us, reverse=True)
        lines += [_import_row(entry) for entry in by_cumulative[:TOP_MODULES]]

        lines += [
            "",
            "The same imports summed by top-level package (self times, so nothing is counted "
            "twice), with the part spent in modules that `import boto3` does not load:",
            "",
            "| Package | Modules | Self ms | Not loaded by `import boto3` ms |",
            "| --- | ---: | ---: | ---: |",
        ]

        packages: dict[str, list[ImportEntry]] = {}
        for entry in self.imports:
            packages.setdefault(entry.module.split(".")[0], []).append(entry)

        ranked = sorted(packages.items(), key=lambda item: _self_us(item[1]), reverse=True)
        for package, entries in ranked[:TOP_MODULES]:
            extra = [e for e in entries if e.module not in self.boto3_modules]
            lines.append(
                f"| `{package}` | {len(entries)} | {_self_us(entries) / 1000:.1f} "
                f"| {_self_us(extra) / 1000:.1f} |"
            )

        extra_all = [e for e in self.imports if e.module not in self.boto3_modules]
        lines.append(
            f"| all {len(packages)} packages | {len(self.imports)} "
            f"| {_self_us(self.imports) / 1000:.1f} | {_self_us(extra_all) / 1000:.1f} |"
        )
        return "\n".join(lines)


def _self_us(entries: list[ImportEntry]) -> int:
    return sum(entry.self_us for entry in entries)


def _import_row(entry: ImportEntry) -> str:
    return (
        f"| `{entry.module}` | {entry.depth} | {entry.cumulative_us / 1000:.1f} "
        f"| {entry.self_us / 1000:.1f} |"
    )


def function_environment(template: Template, name: str) -> dict[str, str]:
    """Return the function's variables from template.yaml, with plausible values for refs."""
    spec = next(f for f in template.functions if f.code_uri.name == name)
    defaults = {p.name: p.default for p in template.parameters}
    environment: dict[str, str] = {}
    for variable, value in spec.environment.items():
        environment[variable] = _plausible(variable, value, defaults)
    return environment


def _plausible(variable: str, value: Any, defaults: dict[str, str | None]) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) == {"Ref"}:
        ref = str(value["Ref"])
        default = defaults.get(ref)
        return default if default is not None else f"mfa-bench-{ref}"
    return f"mfa-bench-{variable}"


def _base_environment() -> dict[str, str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "MFA_", "POWERTOOLS_", "PYTHON"))
    }
    environment.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return environment


@dataclass(frozen=True)
class _Command:
    name: str
    argv: list[str]
    env: dict[str, str]


def _commands(template: Template) -> dict[str, _Command]:
    base = _base_environment()
    commands = {
        BOTO3: _Command(
            BOTO3, [sys.executable, "-c", _BOTO3_SCRIPT], {**base, "PYTHONPATH": str(LAYER_PATH)}
        )
    }
    for name, members in FUNCTION_CLIENTS.items():
        folder, module_file = FUNCTION_MODULES.get(name, (name, "app.py"))
        code_dir = ROOT / "functions" / folder
        module = module_file.removesuffix(".py")
        commands[name] = _Command(
            name,
            [sys.executable, "-c", _FUNCTION_SCRIPT, str(code_dir / module_file), module, *members],
            {
                **base,
                **function_environment(template, folder),
                # Lambda puts the function's folder first, then the layer.
                "PYTHONPATH": os.pathsep.join([str(code_dir), str(LAYER_PATH)]),
            },
        )
    return commands


def _run(command: _Command, *extra_flags: str) -> subprocess.CompletedProcess[str]:
    argv = [command.argv[0], *extra_flags, *command.argv[1:]]
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        argv, env=command.env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"the cold-init process for {command.name} failed with exit code "
            f"{result.returncode}:\n{result.stderr[-2000:]}"
        )
    return result


def _sample(command: _Command) -> Sample:
    import_ns, clients_ns = (int(part) for part in _run(command).stdout.split())
    return Sample(import_ns, clients_ns)


def parse_importtime(stderr: str) -> list[ImportEntry]:
    """Parse `-X importtime` lines: `import time: <self us> | <cumulative us> | <name>`."""
    entries = []
    _, marker, timed = stderr.partition(TIMED_MARKER)
    for line in (timed if marker else stderr).splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue  # the header line
        name = parts[2].rstrip()
        stripped = name.lstrip(" ")
        depth = (len(name) - len(stripped) - 1) // 2
        entries.append(
            ImportEntry(stripped, int(parts[0].strip()), int(parts[1].strip()), max(depth, 0))
        )
    return entries


def measure(samples: int = DEFAULT_SAMPLES) -> ColdInitResult:
    if samples < 1:
        raise ValueError(f"invalid samples {samples}: use 1 or more")
    commands = _commands(load_template())
    names = list(commands)
    for name in names:  # untimed: warms the file cache
        _sample(commands[name])
    collected: dict[str, list[Sample]] = {name: [] for name in names}
    for round_index in range(samples):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            collected[name].append(_sample(commands[name]))

    def median_total(name: str) -> float:
        return statistics.median(sample.total_ns for sample in collected[name])

    slowest = max(FUNCTION_CLIENTS, key=median_total)
    runs = [
        parse_importtime(_run(commands[slowest], "-X", "importtime").stderr)
        for _ in range(IMPORTTIME_RUNS)
    ]
    boto3_run = parse_importtime(_run(commands[BOTO3], "-X", "importtime").stderr)
    return ColdInitResult(
        collected,
        slowest,
        median_imports(runs),
        frozenset(entry.module for entry in boto3_run),
    )


def median_imports(runs: list[list[ImportEntry]]) -> list[ImportEntry]:
    """Return, per module, the median self and cumulative times of several importtime runs."""
    by_module: dict[str, list[ImportEntry]] = {}
    for run in runs:
        for entry in run:
            by_module.setdefault(entry.module, []).append(entry)
    return [
        ImportEntry(
            module,
            int(statistics.median(e.self_us for e in entries)),
            int(statistics.median(e.cumulative_us for e in entries)),
            entries[0].depth,
        )
        for module, entries in by_module.items()
    ]
