"""The examples in convjax's docstrings, run with :mod:`doctest`: one test per docstring of
every module under ``convjax/`` (so ``python -m pytest tests`` runs them and ``-n 2`` spreads
them over workers). Options: ``ELLIPSIS`` and ``NORMALIZE_WHITESPACE``. Examples that cannot
run here (they need a trained workdir, TFDS data, or run a whole benchmark) carry
``# doctest: +SKIP`` in the docstring itself; the few docstrings whose examples take long
(compiling a whole network on the CPU) are marked ``slow`` below and run with ``-m slow``.
"""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil

import pytest

import convjax

#: Docstrings whose examples take more than a few seconds (they build and run whole networks
#: eagerly on the CPU); they run with ``-m slow``.
SLOW = {
    "convjax.bench.plain_models.PlainCifarResNet",
    "convjax.bench.plain_models.PlainSmallCNN",
    "convjax.bench.train_step.bench_side_by_side",
    "convjax.bench.train_step.prepare_variant",
    "convjax.linen.flex_conv.FlexConv",
    "convjax.models.flexnet.FlexBlock",
    "convjax.models.flexnet.FlexNet",
    "convjax.models.flextcn.FlexTCN",
    "convjax.models.resnet.BasicBlock",
    "convjax.models.resnet.ResNet",
    "convjax.ops.deconv.deconv_conv",
}

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# scikit-learn sets KMP_DUPLICATE_LIB_OK / KMP_INIT_AT_FORK in os.environ when first imported
# (the digits examples import it): import it now, so that one-time import side effect is not
# blamed on whichever example happens to run first.
try:
    import sklearn  # noqa: F401
except ImportError:  # pragma: no cover - scikit-learn is a core dependency
    pass


def _module_names() -> list[str]:
    return ["convjax"] + sorted(
        info.name for info in pkgutil.walk_packages(convjax.__path__, prefix="convjax.")
    )


def _doctests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = []
    for name in _module_names():
        module = importlib.import_module(name)
        tests.extend(t for t in finder.find(module, name) if t.examples)
    return sorted(tests, key=lambda t: t.name)


DOCTESTS = _doctests()


def _param(test: doctest.DocTest) -> object:
    marks = [pytest.mark.slow] if test.name in SLOW else []
    return pytest.param(test, id=test.name, marks=marks)


def test_every_module_is_searched():
    """Every module imports, and the docstrings hold a few hundred examples."""
    assert len(_module_names()) > 60
    assert sum(len(t.examples) for t in DOCTESTS) > 300
    assert not SLOW - {t.name for t in DOCTESTS}, "SLOW names a docstring that does not exist"


@pytest.mark.parametrize("test", [_param(t) for t in DOCTESTS])
def test_docstring_examples(test: doctest.DocTest):
    out: list[str] = []
    runner = doctest.DocTestRunner(optionflags=OPTIONS, verbose=False)
    env, cwd = dict(os.environ), os.getcwd()
    try:
        result = runner.run(test, out=out.append)
    finally:  # an example that changed the process would leak into every later test
        changed = sorted(set(env.items()) ^ set(os.environ.items()))
        os.environ.clear()
        os.environ.update(env)
        moved = os.getcwd() != cwd
        os.chdir(cwd)
    if result.failed:
        pytest.fail("".join(out), pytrace=False)
    assert not changed, f"the examples changed os.environ: {changed}"
    assert not moved, "the examples changed the working directory"
