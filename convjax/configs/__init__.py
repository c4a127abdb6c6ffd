"""ml_collections experiment configs: one file per experiment, each with ``get_config()``.

``default`` is the main job (digits, runs on a CPU in about a minute); the others start from
:func:`convjax.configs.default.base_config` and change what differs. Run one with
``convjax train --config=<name or path> [--config.<field>=<value> ...]``;
``convjax configs`` lists them.
"""

from __future__ import annotations

import importlib.util
import pathlib
import types


class ConfigFileError(ValueError):
    """A config file that cannot be run; the message is one line (``file:line: message``)."""


def load_config_module(path: str | pathlib.Path, flag: str = "--config") -> types.ModuleType:
    """Run a Python config file and return it as a module: the one config loader of
    ``convjax train`` (``--config=<file>``) and ``convjax compare <file>``.

    Raises:
      ConfigFileError: a syntax error (``file:line: message``), an exception raised while
        running the file, or no ``get_config`` in it; one line each, prefixed by ``flag``.

    Example:
      >>> load_config_module("convjax/configs/default.py").get_config().model
      'digits_cnn'
    """
    path = pathlib.Path(path)
    spec = importlib.util.spec_from_file_location(f"_convjax_config_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        where = f"{err.filename or path}:{err.lineno}"
        raise ConfigFileError(f"{flag}={path}: {where}: {err.msg}") from None
    except Exception as err:  # noqa: BLE001 - any error inside the user's file: one line
        raise ConfigFileError(f"{flag}={path}: {type(err).__name__}: {err}") from None
    if not hasattr(module, "get_config"):
        raise ConfigFileError(f"{flag}={path}: {path} defines no get_config()")
    return module
