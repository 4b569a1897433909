"""`attention-explorer app [streamlit run options]`: start the Streamlit app from an installed package.

Owns finding the app's entry script and handing over to ``streamlit run``.  The app's files stay
at the top of the repository (``app.py``, ``pages/``, ``.streamlit/config.toml``) so
``streamlit run app.py`` works from a clone; the wheel carries copies of them in ``viz/_app/``
(pyproject.toml, ``force-include``).  An editable install or a clone has no ``viz/_app/`` and
runs the repository's own ``app.py``.  Streamlit reads the ``.streamlit/config.toml`` next to the
entry script, so the classroom settings come along either way; options given on the command line
win over them.

Streamlit is not imported here (only the UI layer imports it): it runs as ``python -m streamlit``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
USAGE = "attention-explorer app [streamlit run options, e.g. --server.port 8600 --theme.base dark]"


class AppNotFound(RuntimeError):
    """Neither the wheel's copy of the app nor a clone's app.py is there."""


def app_script() -> Path:
    """The entry script to hand to ``streamlit run``: the wheel's copy, else the clone's app.py."""
    for script in (PACKAGE / "_app" / "app.py", PACKAGE.parent / "app.py"):
        if script.is_file() and (script.parent / "pages").is_dir():
            return script
    raise AppNotFound(f"the app's files (app.py, pages/) are not installed next to {PACKAGE}; "
                      "reinstall the package or run `streamlit run app.py` from a clone")


def streamlit_command(streamlit_args: list[str]) -> list[str]:
    """The ``python -m streamlit run`` command line for the app, with the caller's options after it."""
    return [sys.executable, "-m", "streamlit", "run", str(app_script()), *streamlit_args]


def add_parser(sub) -> None:
    """The ``app`` subcommand.  Everything after ``app`` goes to ``streamlit run`` untouched."""
    # prefix_chars="+": argparse must not read Streamlit's --server.port style options as its own.
    p = sub.add_parser("app", help="start the Streamlit app (options go to `streamlit run`)",
                       usage=USAGE, prefix_chars="+", add_help=False)
    p.add_argument("streamlit_args", nargs=argparse.REMAINDER)
    p.set_defaults(handler=app_command, parser=p)


def app_command(args: argparse.Namespace) -> int:
    command = streamlit_command(list(args.streamlit_args))
    if args.streamlit_args in (["-h"], ["--help"]):
        print(f"usage: {USAGE}\n\nStarts the app ({command[4]}) with `streamlit run`; "
              "its options follow:\n", flush=True)
        return subprocess.call([*command[:4], "--help"])
    if os.name == "posix":
        # Replace this process: Ctrl-C and a service manager's SIGTERM reach Streamlit directly.
        os.execv(sys.executable, command)
    return subprocess.call(command)
