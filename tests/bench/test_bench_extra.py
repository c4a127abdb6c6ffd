"""Benchmarks that need the ``bench`` extra stop before any work, naming the pip line."""

import pytest

from convjax.bench import padding, retention
from convjax.bench.timing import require_bench_extra


def test_missing_extra_stops_with_the_pip_line(monkeypatch):
    with pytest.raises(SystemExit) as exit_:
        require_bench_extra("convjax_no_such_module", "no-such-package")
    message = str(exit_.value.code)
    assert message.startswith("convjax: error: this benchmark needs no-such-package")
    assert '`pip install -e ".[bench]"`' in message and "`pip install no-such-package`" in message
    # The image benchmarks check scikit-image first: no photograph is loaded, nothing is timed.
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "skimage" else find_spec(n, *a)
    )
    for module in (retention, padding):
        monkeypatch.setattr(module, "load_images", lambda *a, **k: pytest.fail("did work"))
        with pytest.raises(SystemExit, match="needs scikit-image"):
            module.main(["--quick"] if module is padding else [])
