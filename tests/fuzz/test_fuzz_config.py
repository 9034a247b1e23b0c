"""Hostile config and rule files, checked in a fresh process so that its peak RSS can be measured: YAML
bombs (aliases), deep nesting, huge and non-UTF-8 files all end in a ConfigError naming the file and the
problem, within seconds and a bounded footprint. (tests/config/test_config_fuzz.py fuzzes parse_config.)"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from mlwatch.config.loader import MAX_FILE_BYTES

CHECK = textwrap.dedent(
    """
    import json, sys, time
    from mlwatch.config import check_config
    out = {}
    for config in sys.argv[1:]:
        started = time.perf_counter()
        problems = check_config(config, {})
        out[config] = {"problems": [str(p) for p in problems], "seconds": time.perf_counter() - started}
    # VmHWM is this address space's peak; ru_maxrss would carry over the forking pytest worker's RSS across exec.
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"results": out, "peak_kib": int(hwm.split()[1])}))
    """
)


def laughs(levels: int, indent: str = "") -> str:
    lines = [f"{indent}a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"{indent}a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


RULES = "groups:\n  - name: g\n    rules:\n      - record: r\n        expr: up\n"
CASES: dict[str, tuple[str, dict[str, bytes], str]] = {
    # name: (config text, other files, expected problem)
    "billion laughs in the config": ("storage:\n  retention: 1d\nx:\n" + laughs(12, "  "), {}, "x: unknown key"),
    "billion laughs in a value": (laughs(12) + "storage: {retention: *a11}\n", {}, "values after aliases"),
    "billion laughs in a rule file": (
        "rule_files: [r.yml]\n", {"r.yml": ("x:\n" + laughs(9, "  ") + RULES + "        labels: {x: *a8}\n").encode()},
        "r.yml: invalid YAML: the document is too large",
    ),
    "a recursive alias": ("storage: &s {x: *s}\n", {}, ""),
    "deep flow nesting": ("[" * 100_000 + "]" * 100_000, {}, "nested more than 100 levels deep"),
    "deep block nesting": ("".join(" " * i + "a:\n" for i in range(1000)), {}, "nested more than 100 levels deep"),
    "a deep rule file": ("rule_files: [r.yml]\n", {"r.yml": b"[" * 100_000 + b"]" * 100_000}, "r.yml:1: invalid YAML"),
    "a huge config": ("storage: {url: '" + "x" * (MAX_FILE_BYTES + 10) + "'}\n", {}, "larger than 2 MiB"),
    "a huge rule file": ("rule_files: [r.yml]\n", {"r.yml": RULES.encode() + b"#" * MAX_FILE_BYTES},
                         "r.yml: the rule file is larger than 2 MiB"),
    "non-UTF-8": ("", {"mlwatch.yaml": b"storage:\n  retention: 1d\n# \xff\xfe\n"}, ("mlwatch.yaml:3: the config "
                  "file is not valid UTF-8")),
    "a non-UTF-8 rule file": ("rule_files: [r.yml]\n", {"r.yml": b"groups: []\n#\xff\n"}, ("r.yml:2: the rule file is "
                              "not valid UTF-8")),
    "a NUL byte": ("storage:\n  retention: 1d\x00\n", {}, ("mlwatch.yaml:2: YAML does not allow the control "
                   "character U+0000")),
}  # fmt: skip


def test_hostile_config_files(tmp_path: Path) -> None:
    """All cases in one fresh process (one interpreter start-up): its peak RSS bounds every case's."""
    configs = {}
    for i, (name, (text, files, _problem)) in enumerate(CASES.items()):
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        (folder / "mlwatch.yaml").write_text(text)
        for rel, data in files.items():
            (folder / rel).write_bytes(data)
        configs[name] = folder / "mlwatch.yaml"
    run = subprocess.run([sys.executable, "-c", CHECK, *map(str, configs.values())], capture_output=True, text=True,
                         timeout=110, cwd=tmp_path, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout)
    for name, config in configs.items():
        result = report["results"][str(config)]
        problems, expected = result["problems"], CASES[name][2]
        assert problems, f"{name}: a hostile file must not validate"
        assert any(expected in p for p in problems), (name, problems[:5])
        assert all(p.startswith(str(config.parent)) for p in problems), (name, problems[:5])  # FILE:LINE: ...
        assert result["seconds"] < 30, (name, result["seconds"])  # < 2 s on an idle machine; CI boxes are loaded
    assert report["peak_kib"] < 400 * 1024, f"peak RSS {report['peak_kib'] >> 10} MiB"  # ~100 MiB normally


def test_the_daemon_refuses_a_hostile_config_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "mlwatch.yaml"
    config.write_text(laughs(12) + "storage: {retention: *a11}\n")
    run = subprocess.run([sys.executable, "-m", "mlwatch.cli", "daemon", "-c", str(config)], capture_output=True,
                         text=True, timeout=110, cwd=tmp_path, check=False)  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "values after aliases" in run.stderr and "Traceback" not in run.stderr
