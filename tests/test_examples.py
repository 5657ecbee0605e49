"""examples/: the GitHub Actions workflow parses, its steps are in a working order, and every
`edgeq` command line in it uses commands, flags and arguments the CLI really has; the example
budgets file loads and uses absolute and relative budgets."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from edgeq.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
WORKFLOW = EXAMPLES / "github-actions.yml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def steps(workflow: dict) -> list[dict]:
    (job,) = workflow["jobs"].values()
    return job["steps"]


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a `run:` script, each as argv (continuations joined; split on
    newlines, ;, &&, || and |; ${{ }} expressions kept as one word)."""
    out = []
    for line in script.replace("\\\n", " ").splitlines():
        line = line.split(" #")[0].strip()
        for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", line):
            if part and not part.startswith("#"):
                out.append(shlex.split(part))
    return out


def edgeq_lines(workflow: dict) -> list[tuple[str, list[str]]]:
    return [(s.get("name", "?"), argv) for s in steps(workflow) if "run" in s
            for argv in shell_commands(s["run"]) if argv and argv[0] == "edgeq"]


def parse_edgeq(argv: list[str]) -> tuple[str, dict]:
    """Check argv against the click commands: the command exists, every flag is one of its
    options, the positional count matches, required options are there. Returns
    (command, {param name: value}) as click parsed it."""
    args = argv[1:]
    if args[0].startswith("-"):
        top = {o for p in main.params for o in p.opts + p.secondary_opts} | {"--help", "-h"}
        assert args[0] in top, f"edgeq has no option {args[0]}"
        return "", {}
    name = args[0]
    cmd = main.get_command(click.Context(main), name)
    assert cmd is not None, f"edgeq has no command '{name}' ({main.list_commands(None)})"
    options = {o: p for p in cmd.params if isinstance(p, click.Option)
               for o in p.opts + p.secondary_opts}
    positional, i = [], 1
    while i < len(args):
        a = args[i]
        if a.startswith("-") and a != "-":
            flag = a.split("=", 1)[0]
            assert flag in options, f"edgeq {name} has no option {flag}"
            if not options[flag].is_flag and "=" not in a:
                i += 1
        else:
            positional.append(a)
        i += 1
    arguments = [p for p in cmd.params if isinstance(p, click.Argument)]
    assert len(positional) == len(arguments), (name, positional, arguments)
    # click parses it as it would at run time (types, required options), without running it
    ctx = cmd.make_context(f"edgeq {name}", list(args[1:]))
    return name, ctx.params


def test_workflow_shape(workflow):
    assert workflow["name"] == "edgeq"
    on = workflow.get("on", workflow.get(True))  # PyYAML reads a bare `on:` as True
    assert "pull_request" in on and on["push"]["branches"] == ["main"]
    uses = [s.get("uses", "") for s in steps(workflow)]
    assert uses[0].startswith("actions/checkout@")
    setup = next(s for s in steps(workflow)
                 if s.get("uses", "").startswith("actions/setup-python@"))
    assert str(setup["with"]["python-version"]) == "3.11"
    install = next(s["run"] for s in steps(workflow) if "torch==2.13.0" in s.get("run", ""))
    cmds = [" ".join(c) for c in shell_commands(install)]
    torch_at = next(i for i, c in enumerate(cmds) if "torch==2.13.0" in c)
    edgeq_at = next(i for i, c in enumerate(cmds) if re.search(r"install .*\bedgeq\b", c))
    assert torch_at < edgeq_at  # the CPU torch first, or pip pulls the default (CUDA) wheel
    assert "download.pytorch.org/whl/cpu" in cmds[torch_at]


def test_every_edgeq_command_exists(workflow):
    lines = edgeq_lines(workflow)
    parsed = [parse_edgeq(argv) for _, argv in lines]
    names = [n for n, _ in parsed if n]
    assert names == ["run", "check", "report"]


def test_steps_fit_together(workflow):
    """The paths the steps hand each other agree, and the order and conditions make the job
    red on a budget while still publishing what was measured."""
    by_name = {s["name"]: s for s in steps(workflow)}
    order = [s["name"] for s in steps(workflow)]
    cmd = {name: (step, params) for step, argv in edgeq_lines(workflow)
           for name, params in [parse_edgeq(argv)] if name}
    run_step, run = cmd["run"]
    check_step, check = cmd["check"]
    report_step, report = cmd["report"]
    assert order.index(run_step) < order.index(check_step) < order.index(report_step)
    out = Path(run["out_dir"])
    assert Path(check["report"]) == Path(report["report"]) == out / "report.json"
    assert Path(check["budgets_path"]).name == "budgets.yaml"

    # the baseline comes from main's artifact of the same name, and may be missing
    download = next(s for s in steps(workflow) if "gh run download" in s.get("run", ""))
    assert download["continue-on-error"] is True
    dl = next(a for a in shell_commands(download["run"]) if a[:3] == ["gh", "run", "download"])
    artifact, folder = dl[dl.index("--name") + 1], dl[dl.index("--dir") + 1]
    assert Path(check["baseline_path"]) == Path(folder) / "report.json"
    assert check["allow_no_baseline"] is True
    assert order.index(download["name"]) < order.index(check_step)

    upload = next(s for s in steps(workflow) if s.get("uses", "").startswith(
        "actions/upload-artifact@"))
    assert upload["with"]["name"] == artifact and upload["if"] == "always()"
    uploaded = {Path(p) for p in upload["with"]["path"].split()}
    assert {out / "report.json", Path(check["junit_path"]), Path(check["markdown_path"]),
            Path(report["out"])} <= uploaded
    junit = next(s for s in steps(workflow) if "junit" in s.get("uses", ""))
    assert Path(junit["with"]["report_paths"]) == Path(check["junit_path"])
    comment = next(s for s in steps(workflow) if "comment" in s.get("uses", ""))
    assert Path(comment["with"]["path"]) == Path(check["markdown_path"])
    # the check step itself fails the job (no continue-on-error); later steps still run
    assert "continue-on-error" not in by_name[check_step]
    assert "!cancelled()" in by_name[check_step]["if"]
    for name in (report_step, junit["name"], comment["name"]):
        assert "!cancelled()" in by_name[name]["if"] or by_name[name]["if"] == "always()"


def test_parse_edgeq_catches_mistakes():
    with pytest.raises(AssertionError, match="has no option --baselin"):
        parse_edgeq(["edgeq", "check", "r.json", "--budgets", "b.yaml", "--baselin", "x"])
    with pytest.raises(AssertionError, match="has no command 'chekc'"):
        parse_edgeq(["edgeq", "chekc", "r.json"])
    with pytest.raises(click.MissingParameter):
        parse_edgeq(["edgeq", "check", "r.json"])


def test_example_budgets():
    from edgeq.report.budgets import BUDGETS, load_budgets

    budgets = load_budgets(EXAMPLES / "budgets.yaml")
    keys = {b["key"] for b in budgets}
    assert any(BUDGETS[k].relative for k in keys) and any(not BUDGETS[k].relative for k in keys)
    assert {"max_size", "max_size_growth_pct", "max_extra_accuracy_drop",
            "min_sustained_over_peak", "max_energy_mj"} <= keys
    profiles = {p.stem for p in (EXAMPLES.parent / "device_profiles").glob("*.yaml")}
    named = {b["device"] for b in budgets if b["device"] and "*" not in b["device"]} - {"local"}
    assert named <= profiles, named - profiles  # device: names a real device profile
