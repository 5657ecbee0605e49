"""The ``edgeq`` command: a click group whose commands are thin layers over the library.

Errors are mapped to exit codes here, in one place: ``EdgeqError.exit_code`` (2 bad input,
1 budget exceeded, 3 runtime or device failure), with one line on stderr."""
from __future__ import annotations

import os
import sys

import click

from edgeq import __version__

COMMANDS = {  # name -> module:function, imported only when the command runs
    "demo": "edgeq.cli.demo:demo",
    "export": "edgeq.cli.export:export",
    "eval": "edgeq.cli.evaluate:evaluate",
    "profile": "edgeq.cli.profile:profile",
    "check": "edgeq.cli.check:check",
    "report": "edgeq.cli.report:report",
    "run": "edgeq.cli.run:run",
    "ray-worker": "edgeq.cli.ray_worker:ray_worker",
    "targets": "edgeq.cli.info:targets",
    "devices": "edgeq.cli.devices:devices",
    "device": "edgeq.cli.devices:device",
    "doctor": "edgeq.cli.info:doctor",
    "sensitivity": "edgeq.cli.sensitivity:sensitivity",
    "calib-check": "edgeq.cli.calib_check:calib_check",
}
SUMMARIES = {
    "demo": "The whole flow on the bundled digits CNN and data.",
    "export": "Quantize a PyTorch model and lower it to a deployable artifact.",
    "eval": "Measure accuracy of an artifact, run in its own runtime.",
    "profile": "Measure latency and peak memory of an artifact on a device.",
    "check": "Check a report against budgets, absolute or against a baseline (exit 1 on failure).",
    "report": "Render a report.json as one self-contained HTML page with plots.",
    "run": "Run a pipeline file: model x recipes x targets x devices, cached, one report.",
    "ray-worker": "Join a Ray cluster with this host's devices (for run --ray).",
    "targets": "List the deployable targets and what each needs.",
    "devices": "List the device profiles usable with `profile --estimate --profile NAME`.",
    "device": "Measure a device and write its profile: `device probe --device local -o F`.",
    "doctor": "Show what is installed, what is missing, and how to fix it.",
    "sensitivity": "Per-layer quantization sensitivity, ranked (what to keep in float).",
    "calib-check": "Is the calibration set representative? Per-layer clipping on eval.",
}


def quiet_libraries() -> None:
    """torch, torchao and executorch warn loudly about their own internals on import;
    none of it is actionable for an edgeq user. EDGEQ_DEBUG=1 shows everything."""
    if os.environ.get("EDGEQ_DEBUG"):
        return
    import logging
    import warnings

    warnings.filterwarnings("ignore")

    # torch installs its own handlers and levels when imported, and its records come
    # from child loggers: only a process-wide threshold reliably keeps them quiet.
    logging.disable(logging.WARNING)


class EdgeqGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        import importlib

        mod, _, fn = COMMANDS[name].partition(":")
        return getattr(importlib.import_module(mod), fn)

    def format_commands(self, ctx, formatter):
        # Summaries come from a table so that --help imports no command module.
        with formatter.section("Commands"):
            formatter.write_dl([(n, SUMMARIES[n]) for n in COMMANDS])

    def invoke(self, ctx):
        from edgeq.errors import EdgeqError

        try:
            return super().invoke(ctx)
        except EdgeqError as e:
            click.echo(f"edgeq: error: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("edgeq: interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as e:  # a bug or an unexpected runtime failure: still one line
            if os.environ.get("EDGEQ_DEBUG"):
                raise
            first = (str(e).strip().splitlines() or [""])[0][:300]
            click.echo(f"edgeq: internal error: {type(e).__name__}: {first} "
                       "(EDGEQ_DEBUG=1 shows the traceback)", err=True)
            ctx.exit(3)


@click.group(cls=EdgeqGroup, context_settings={"help_option_names": ["-h", "--help"],
                                               "max_content_width": 100})
@click.version_option(__version__, prog_name="edgeq")
def main():
    """edgeq: take a trained PyTorch model to a phone or an edge board, and prove on the
    way that it still works.

    \b
    The flow:  export (quantize + lower)  ->  eval (accuracy on the artifact itself)
               ->  profile (latency, memory)  ->  check (budgets, exit 1 when exceeded)
    Start with `edgeq demo`. Every command takes --json (result on stdout; progress and
    tables on stderr). Exit codes: 0 ok, 1 budget exceeded, 2 bad input, 3 runtime or
    device failure.
    """
    quiet_libraries()


def run() -> None:
    main(prog_name="edgeq")


if __name__ == "__main__":
    sys.exit(run())
