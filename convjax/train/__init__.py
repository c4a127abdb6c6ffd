"""convjax.train: data-parallel training of convjax models.

Import the submodules you need (this package imports nothing itself, so the multi-process
launcher stays light):

* :mod:`convjax.train.loop` -- ``train(config, workdir)``: the whole job (data, model, two
  optimizers, pmap/shard_map step, eval, checkpoints, metrics, summary), split into
  ``setup`` / ``run_loop`` / ``finish``;
* :mod:`convjax.train.config` -- ``resolve_spec``: the config (file + ``--config.x=y``) merged
  onto the defaults once into a typed :class:`~convjax.train.spec.TrainSpec`; the resume
  comparison;
* :mod:`convjax.train.spec` -- ``TrainSpec`` (model, data, optimizers, run) and ``RunSpec``:
  what ``train``, ``make_train_setup`` and ``load_model`` take and return;
* :mod:`convjax.train.inference` -- ``load_model(workdir) -> (model, spec)``,
  ``evaluate_workdir``, ``predict``, ``export_model`` (``convjax eval/predict/export``);
* :mod:`convjax.train.state` -- ``split_model``, ``TrainState``, ``create_train_state``:
  an NNX model as pure pytrees (params / pad_params / stats);
* :mod:`convjax.train.step` -- ``make_train_step``, ``make_eval_step``, ``make_loss_fn``:
  per-device functions written with ``lax.pmean``/``psum`` over the "batch" axis;
* :mod:`convjax.train.factory` -- ``make_train_setup(config, ...)``: a config's model,
  initial state, both optimizers and per-device steps, without the data pipeline (used by
  ``python -m convjax.bench.train_step``);
* :mod:`convjax.train.optim` -- task optimizer with per-group learning rates (FlexConv
  ``MaskParam`` at 0.1x), warm-up + cosine, and the padding optimizer;
* :mod:`convjax.train.distributed` -- ``DataParallel("pmap" | "shard_map")`` and the
  multi-host setup; :mod:`convjax.train.launch` -- ``convjax launch``;
* :mod:`convjax.train.checkpoint` -- orbax ``Checkpointer`` (exact resume);
* :mod:`convjax.train.metrics` -- JSON-lines / TensorBoard ``MetricsWriter``, ``read_jsonl``.

``convjax.train.load_model`` and ``convjax.train.train`` are imported on first use.

Example (not run as a doctest: trains the 440-step default run):
  >>> from convjax.configs import default  # doctest: +SKIP
  >>> from convjax.train.loop import train  # doctest: +SKIP
  >>> summary = train(default.get_config(), "runs/default")  # doctest: +SKIP
"""


def __getattr__(name: str):
    """``convjax.train.load_model`` (and the other inference helpers), imported on use."""
    if name in ("load_model", "evaluate_workdir", "predict", "export_model", "logits_fn"):
        from convjax.train import inference

        return getattr(inference, name)
    if name in ("train", "setup", "run_loop", "finish"):
        from convjax.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'convjax.train' has no attribute {name!r}")
