"""absl flags made from the fields of a config dataclass, so that a field's type, help text and
default are written once (in the dataclass and its docstring) and the command line follows.

A generated flag defaults to None, meaning "the experiment's value"; its help names the field's
own default (for the training configs, the paper's).
"""

import dataclasses
import errno
import glob
import logging as std_logging
import os
import re
import signal
import sys
import threading
import typing
from typing import Dict, Mapping, Optional, Sequence, Tuple

from absl import app, flags

from speech2face import errors

_ATTRIBUTE = re.compile(r"^      ([a-z_0-9, ]+): (.*)$")


def field_docs(cls) -> Dict[str, str]:
    """Field name -> its text in the class docstring's "Attributes:" section (Google style; one
    entry may document several comma-separated fields)."""
    docs, names = {}, []
    for line in (cls.__doc__ or "").splitlines():
        match = _ATTRIBUTE.match(line)
        if match:
            names = [n.strip() for n in match.group(1).split(",")]
            for name in names:
                docs[name] = match.group(2).strip()
        elif names and line.startswith("        "):
            for name in names:
                docs[name] += " " + line.strip()
        else:
            names = []
    return docs


def _base_type(annotation):
    if typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return annotation


def define_from(cls, names: Optional[Mapping[str, str]] = None, skip: Sequence[str] = (),
                choices: Optional[Mapping[str, Sequence[str]]] = None, help_prefix: str = "",
                flag_values=flags.FLAGS) -> Dict[str, str]:
    """Defines one flag per field of dataclass `cls` (unless in `skip` or already defined);
    `names` renames fields (field -> flag name); `choices` makes enums. Returns flag -> field."""
    names, choices, docs = dict(names or {}), dict(choices or {}), field_docs(cls)
    # The flags belong to the calling tool, so that its --help lists them (absl's own rule).
    module = sys._getframe(1).f_globals.get("__name__")  # pylint: disable=protected-access
    module = sys.argv[0] if module == "__main__" else module
    hints = typing.get_type_hints(cls)
    defined = {}
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        flag = names.get(field.name, field.name)
        defined[flag] = field.name
        if flag in flag_values:
            continue  # shared by two configs (e.g. vggface_weights): one flag sets both
        default = field.default
        help_text = (f"{help_prefix}{docs.get(field.name, field.name)} "
                     f"[{cls.__name__}.{field.name}: {default!r}]")
        kind = _base_type(hints[field.name])
        if field.name in choices:
            flags.DEFINE_enum(flag, None, list(choices[field.name]), help_text,
                              flag_values=flag_values, module_name=module)
        elif kind is bool:
            flags.DEFINE_bool(flag, None, help_text, flag_values=flag_values, module_name=module)
        elif kind is int:
            flags.DEFINE_integer(flag, None, help_text, flag_values=flag_values, module_name=module)
        elif kind is float:
            flags.DEFINE_float(flag, None, help_text, flag_values=flag_values, module_name=module)
        else:
            flags.DEFINE_string(flag, None, help_text, flag_values=flag_values, module_name=module)
    return defined


def set_values(section: str, defined: Mapping[str, str],
               flag_values=flags.FLAGS) -> Dict[str, object]:
    """{"section.field": value} for the flags of `defined` given on the command line."""
    return {f"{section}.{field}": flag_values[flag].value for flag, field in defined.items()
            if flag_values[flag].value is not None}


def kwargs_given(defined: Mapping[str, str], flag_values=flags.FLAGS) -> Dict[str, object]:
    """{field: value} for the flags of `defined` given on the command line (to build the config
    with; the fields not given keep their dataclass defaults)."""
    return {field: flag_values[flag].value for flag, field in defined.items()
            if flag_values[flag].value is not None}


def given(defined: Mapping[str, str], flag_values=flags.FLAGS) -> Tuple[str, ...]:
    """The flags of `defined` given on the command line."""
    return tuple(flag for flag in defined if flag_values[flag].value is not None)


def as_main_module(module_name: str, doc: str) -> None:
    """Makes the tool `module_name` the one `--help` describes when it runs from a forwarding
    script (`train.py`, `python -m data_prep.build_records`) or a console script: its docstring
    and its flags, which absl otherwise files under the module's import name."""
    sys.modules["__main__"].__doc__ = doc
    for flag in flags.FLAGS.flags_by_module_dict().get(module_name, []):
        flags.FLAGS.register_flag_by_module(sys.argv[0], flag)


# OS errors of the machine, not of the code: a read-only or full disk, a denied permission.
_ENVIRONMENT_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


def user_message(error: BaseException) -> Optional[str]:
    """The one-line message of an error the user caused (a `speech2face.errors.UserError`, a
    denied permission, a read-only or full disk), or None for anything else (a bug)."""
    if isinstance(error, errors.UserError):
        return str(error)
    if isinstance(error, OSError) and error.errno in _ENVIRONMENT_ERRNOS:
        where = f"{error.filename}: " if error.filename else ""
        return (f"{where}{os.strerror(error.errno)}: choose a writable directory with free "
                "space, or fix its permissions")
    # tf.errors.PermissionDeniedError (gfile), without importing TensorFlow here.
    if type(error).__name__ == "PermissionDeniedError":
        return f"{getattr(error, 'message', error)}: fix the permissions or choose another path"
    return None


def prog() -> str:
    """The tool's name in its messages: what the user ran, `train.py`, `build_records.py` (for
    `python -m data_prep.build_records`) or a console script's `speech2face-build-records`; the
    same in every line a tool prints (`fail`, `run_main`, train.py's stop message)."""
    name = os.path.basename(sys.argv[0])
    if name == "__main__.py":  # python -m speech2face.app: the package's name
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        return spec.name.removesuffix(".__main__") if spec else "speech2face"
    return name or "speech2face"


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM (`run_main`): a KeyboardInterrupt, so that whatever
    cleans up after Ctrl-C (`except BaseException`, `finally`) cleans up after SIGTERM too."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


_terminated = []  # the signal that stopped this tool, once received


def descendants(pid: int):
    """The pids of the processes that `pid` started, and theirs (Linux's /proc; [] elsewhere)."""
    found, parents = [], [pid]
    while parents:
        for path in glob.glob(f"/proc/{parents.pop()}/task/*/children"):
            try:
                with open(path, encoding="ascii") as f:
                    children = [int(c) for c in f.read().split()]
            except (OSError, ValueError):  # the thread or process ended
                continue
            found += children
            parents += children
    return found


def _stop(signum, frame):  # pylint: disable=unused-argument
    """SIGINT and SIGTERM in `run_main`: KeyboardInterrupt or `Terminated`. Logging ends first:
    what the stop unwinds through may log it with a traceback (Beam's DoFn runner does, and its
    worker threads), and the tool's one line says it all. SIGTERM is passed on to the processes
    the tool started, as a terminal's Ctrl-C reaches the whole job: Beam's local workers, which
    the runner waits for as it unwinds, would otherwise never end."""
    std_logging.disable(std_logging.CRITICAL)
    threading.excepthook = lambda args: None
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    if _terminated:  # a second SIGTERM while cleaning up: let the cleanup finish
        return
    _terminated.append(signum)
    for child in descendants(os.getpid()):
        try:
            os.kill(child, signum)
        except OSError:  # it ended
            pass
    raise Terminated(signum)


def run_main(module_name: str, doc: str, main, flags_parser=None) -> None:
    """Runs a tool's `main(argv)` under absl, its `--help` describing that tool
    (`as_main_module`); every tool's `run()`, the console-script entry point, is this call.

    An error the user caused (`user_message`, or absl's `app.UsageError`, or a flag absl cannot
    parse) ends the tool with one line on stderr, `PROG: error: MESSAGE`, and exit status 1;
    any other exception keeps its traceback. Ctrl-C (a KeyboardInterrupt) ends it with one line
    too, and status 130 (128 + SIGINT). SIGTERM raises `Terminated` (a KeyboardInterrupt) in the
    main thread: what the tool wrote is cleaned up as after Ctrl-C, and it ends with `PROG:
    stopped by SIGTERM`, status 143 (128 + SIGTERM). train.py's loop handles both signals itself
    while it trains (a checkpoint, then the same status). `flags_parser`: absl's, for a tool that
    passes unknown flags on (build_records to Beam)."""
    as_main_module(module_name, doc)

    def stopped(signum: int) -> "typing.NoReturn":
        print(f"{prog()}: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        sys.exit(128 + signum)

    def guarded(argv):
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _stop)
        try:
            return main(argv)
        except KeyboardInterrupt as e:
            if isinstance(e, Terminated) or _terminated:
                stopped(_terminated[0] if _terminated else e.signum)
            print(f"{prog()}: interrupted", file=sys.stderr)
            sys.exit(130)
        except app.UsageError as e:  # absl would print the whole usage above it
            fail(f"{e} (--helpshort lists the flags)")
        except Exception as e:  # pylint: disable=broad-except
            if _terminated:  # raised in a Beam transform, it comes back as a RuntimeError
                stopped(_terminated[0])
            message = user_message(e)
            if message is None:
                raise
            fail(message)

    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:  # absl prints two lines, "FATAL Flags parsing error: ..."
            fail(" ".join(str(e).split()) + " (--helpshort lists the flags)")

    app.run(guarded, flags_parser=flags_parser or parse)


def check_usage(argv: Sequence[str], required: Sequence[str] = ()) -> None:
    """Raises absl's UsageError (one line under `run_main`) for bare arguments the tool does
    not take, or for a required flag left empty."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    for name in required:
        if not getattr(flags.FLAGS, name):
            raise app.UsageError(f"--{name} is required")


def fail(message) -> "typing.NoReturn":
    """Ends a command-line tool with one line `PROG: error: MESSAGE` on stderr (PROG: `prog()`)
    and exit status 1."""
    print(f"{prog()}: error: {message}", file=sys.stderr)
    sys.exit(1)
