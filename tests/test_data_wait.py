"""``DataWait``: the share of step time spent waiting for the next batch, and its warning."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from lit_ssl.callbacks import data_wait
from lit_ssl.callbacks.data_wait import DataWait


class _Module:
    def __init__(self) -> None:
        self.logged: list[float] = []

    def log(self, name: str, value: float, **kwargs) -> None:
        assert name == "perf/data_wait" and kwargs["on_epoch"]
        self.logged.append(value)


def _steps(callback: DataWait, clock: list[float], gpu: bool, monkeypatch) -> _Module:
    """Run hooks against a fake clock: each batch waits 3 s for data and computes 1 s."""
    ticks = iter(clock)
    monkeypatch.setattr(data_wait.time, "perf_counter", lambda: next(ticks))
    monkeypatch.setattr(data_wait, "_on_gpu", lambda trainer: gpu)
    trainer = SimpleNamespace(datamodule=SimpleNamespace(hparams={"num_workers": 2}))
    module = _Module()
    callback.setup(trainer, module, "fit")
    callback.on_train_epoch_start(trainer, module)
    for _ in range((len(clock) - 1) // 2):
        callback.on_train_batch_start(trainer, module, None, 0)
        callback.on_train_batch_end(trainer, module, None, None, 0)
    return module


def _clock(steps: int) -> list[float]:
    clock, now = [0.0], 0.0
    for _ in range(steps):
        now += 3.0  # waiting for the batch
        clock.append(now)
        now += 1.0  # the step itself
        clock.append(now)
    return clock


def test_the_share_is_the_wait_over_the_whole_step(monkeypatch):
    module = _steps(DataWait(), _clock(4), gpu=False, monkeypatch=monkeypatch)
    assert module.logged == pytest.approx([0.75] * 4)


def test_a_starved_gpu_is_called_out_once_in_one_line(monkeypatch, caplog):
    callback = DataWait(window=3, skip=1)
    with caplog.at_level(logging.WARNING, logger=data_wait.__name__):
        _steps(callback, _clock(12), gpu=True, monkeypatch=monkeypatch)
    (record,) = [r for r in caplog.records if r.name == data_wait.__name__]
    message = record.getMessage()
    assert "\n" not in message and "75%" in message and "--data.num_workers (now 2)" in message


def test_on_cpu_nothing_is_said(monkeypatch, caplog):
    with caplog.at_level(logging.WARNING, logger=data_wait.__name__):
        _steps(DataWait(window=3, skip=1), _clock(12), gpu=False, monkeypatch=monkeypatch)
    assert not [r for r in caplog.records if r.name == data_wait.__name__]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="warn_above=1.5"):
        DataWait(warn_above=1.5)
    with pytest.raises(ValueError, match="window=0"):
        DataWait(window=0)


def test_lit_ssl_fit_logs_the_data_wait_in_metrics_csv(tmp_path, capsys):
    from cli_runs import FIT, RECIPE, SIZE, run_lit_ssl, write_class_folders

    write_class_folders(tmp_path / "labelled")
    run_lit_ssl(["fit", "--config", str(RECIPE), "--data.root", "labelled", *SIZE, *FIT], tmp_path)
    metrics = tmp_path / "runs" / "finetune" / "version_0" / "metrics.csv"
    header, *rows = metrics.read_text().splitlines()
    column = header.split(",").index("perf/data_wait")
    shares = [float(r.split(",")[column]) for r in rows if r.split(",")[column]]
    assert shares and all(0.0 <= s < 1.0 for s in shares)
