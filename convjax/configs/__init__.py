"""ml_collections experiment configs: one file per experiment, each with ``get_config()``.

``default`` is the main job (digits, runs on a CPU in about a minute); the others start from
:func:`convjax.configs.default.base_config` and change what differs. Run one with
``convjax train --config=<name or path> [--config.<field>=<value> ...]``;
``convjax configs`` lists them.
"""
