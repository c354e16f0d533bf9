"""Issue 21, the detector (and the classifier) under hostile inputs, one test per item.

1: images of another size than fit are refused with the fix (detector and untiled classifier;
tiled classifiers take any frame size). 2: non-finite scores never become a threshold, and
the ONNX metadata never holds NaN. 3: the coreset selection stops on SIGTERM (the loop, the
detector, Lightning's in-process handler, and a real ``lit-ssl fit`` process), keeping the
bank empty. 8: bad ``layers``/``neighbourhood`` are refused with what is allowed.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from _defect_data import trainer_kwargs
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_ssl.anomaly import AnomalyDetector, greedy_coreset
from lit_ssl.anomaly.memory_bank import STOP_CHECK_EVERY, StopRequested
from lit_ssl.classify import DefectClassifier
from lit_ssl.cli.main import main
from lit_ssl.data import FactoryDataModule, write_synthetic_dataset
from lit_ssl.onnx_export import encode_metadata

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "anomaly.yaml"
CPU = ["--data.num_workers", "0", "--trainer.accelerator", "cpu"]
TINY = ["--config", str(RECIPE), "--model.backbone", "test_resnet", *CPU]


def _cli(args: list[str], cwd: Path, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        code = main(args)
    out, err = capsys.readouterr()
    return code, out + err


def _fitted_detector(size: int = 32) -> AnomalyDetector:
    detector = AnomalyDetector("test_resnet", coreset_fraction=0.5).eval()
    detector.add_good(torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(0)))
    detector.build_bank()
    return detector


# ----------------------------------------------------------------------- item 1: input size
def test_item1_predict_at_another_size_than_fit_is_refused_with_the_fix(tmp_path, capsys):
    """The issue's repro: fit at 32 px, predict with the recipe as written (128 px)."""
    write_synthetic_dataset(
        tmp_path / "mv", image_size=32, n_train=8, n_test_good=2, n_per_defect=1, seed=0
    )
    code, text = _cli(
        ["fit", *TINY, "--data.image_size", "32", "--data.root", "mv"], tmp_path, capsys
    )
    assert code == 0, text[-2000:]
    ckpt = "runs/anomaly/version_0/checkpoints/last.ckpt"
    predict = ["predict", *TINY, "--data.root", "mv/test", "--ckpt_path", ckpt]
    code, text = _cli(predict, tmp_path, capsys)
    assert code == 2, text[-2000:]
    error = text[text.index("lit-ssl: error:") :].strip().splitlines()
    assert "fit on 32x32 inputs but got 128x128" in error[0]
    assert "--data.image_size 32" in error[1] and len(error) == 2
    code, text = _cli([*predict, "--data.image_size", "32"], tmp_path, capsys)
    assert code == 0, text[-2000:]  # at the fit size it runs


def test_item1_detector_forward_checks_the_size_recorded_in_the_state_dict():
    detector = _fitted_detector(32)
    with pytest.raises(ValueError, match=r"fit on 32x32 inputs but got 48x48"):
        detector(torch.rand(1, 3, 48, 48))
    loaded = AnomalyDetector("test_resnet", coreset_fraction=0.5).eval()
    loaded.memory_bank = torch.zeros_like(detector.memory_bank)
    loaded(torch.rand(1, 3, 48, 48))  # never fit: no size known, nothing to check
    loaded.load_state_dict(detector.state_dict())
    with pytest.raises(ValueError, match=r"--data.image_size 32"):
        loaded(torch.rand(1, 3, 48, 48))
    assert loaded(torch.rand(2, 3, 32, 32))[1].shape == (2,)


def test_item1_classifier_refuses_another_size_unless_tiled():
    images32, images64 = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 64, 64)
    classifier = DefectClassifier("test_resnet").eval()
    classifier.predict_scores(images64)  # not fit yet: any size
    classifier._record_size(images32)  # what training_step records
    classifier.predict_scores(images32)
    with pytest.raises(ValueError, match=r"classifier was fit on 32x32 inputs but got 64x64"):
        classifier.predict_scores(images64)
    with pytest.raises(ValueError, match="--data.image_size 32"):
        classifier.validation_step((images64, torch.tensor([0, 1])), 0)
    old = {k: v for k, v in classifier.state_dict().items() if k != "input_size"}
    checkpoint = {"state_dict": old}
    restored = DefectClassifier("test_resnet").eval()
    restored.on_load_checkpoint(checkpoint)  # a checkpoint older than the buffer loads
    restored.load_state_dict(checkpoint["state_dict"])
    restored.predict_scores(images64)  # unknown size: nothing checked
    restored.load_state_dict(classifier.state_dict())
    with pytest.raises(ValueError, match="fit on 32x32"):
        restored.predict_scores(images64)
    tiled = DefectClassifier("test_resnet", tile_size=16).eval()
    tiled._record_size(images32, evaluation=True)
    assert tiled.predict_scores(images64)[0].shape == (2,)  # whole frames of any size


# ----------------------------------------------------------------------- item 2: NaN weights
def _poison(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.fill_(float("nan"))


def test_item2_nan_weights_never_give_a_threshold_or_nan_metadata(tmp_path):
    detector = AnomalyDetector("test_resnet", coreset_fraction=0.5)
    _poison(detector.backbone)
    root = write_synthetic_dataset(
        tmp_path / "line", image_size=32, n_train=8, n_test_good=4, n_per_defect=2, seed=0
    )
    data = FactoryDataModule(str(root), task="anomaly", image_size=32, batch_size=8)
    trainer = L.Trainer(max_epochs=1, **trainer_kwargs(tmp_path))
    with pytest.raises(ValueError, match=r"not finite \(NaN/inf\): the backbone weights"):
        trainer.fit(detector, data)
    assert detector.memory_bank.numel() == 0 and float(detector.threshold) == math.inf

    fitted = _fitted_detector(32)  # a finite bank whose validation scores come out NaN
    fitted._val = [(torch.tensor([0.1, float("nan")]), torch.tensor([0, 0]))]
    with pytest.raises(ValueError, match="scores on the validation images are not finite"):
        fitted.on_validation_epoch_end()
    assert float(fitted.threshold) == math.inf  # never stored
    fitted.threshold.fill_(float("nan"))  # e.g. an older checkpoint
    with pytest.raises(ValueError, match="threshold is NaN"):
        fitted.to_onnx(tmp_path / "detector.onnx")
    assert not (tmp_path / "detector.onnx").exists()
    with pytest.raises(ValueError, match="'threshold' is not a finite number"):
        encode_metadata({"threshold": float("nan")})
    fitted.memory_bank.fill_(float("nan"))  # a checkpoint fit from NaN weights
    trainer = L.Trainer(**trainer_kwargs(tmp_path))
    images = torch.utils.data.DataLoader(torch.rand(2, 3, 32, 32), batch_size=2)
    for run in (trainer.test, trainer.predict):  # AUROC of NaN scores; every image "good"
        with pytest.raises(ValueError, match="memory bank or threshold is not finite"):
            run(fitted, images)

    classifier = DefectClassifier("test_resnet").eval()
    with pytest.raises(ValueError, match="defect scores on the validation images are not finite"):
        classifier._choose_threshold(torch.tensor([0.2, float("nan")]), torch.tensor([0.0, 1.0]))
    assert float(classifier.threshold) == 0.5 and not bool(classifier.threshold_from_validation)
    classifier.threshold.fill_(float("nan"))
    with pytest.raises(ValueError, match="'threshold' is not a finite number"):
        classifier.to_onnx(tmp_path / "classifier.onnx", image_size=32)
    assert not (tmp_path / "classifier.onnx").exists()


# ----------------------------------------------------------------------- item 3: SIGTERM
def test_item3_the_coreset_stops_when_asked_and_the_bank_stays_empty():
    features = torch.randn(2000, 16, generator=torch.Generator().manual_seed(0))
    calls = []

    def stop_on_third_call() -> bool:
        calls.append(1)
        return len(calls) >= 3

    with pytest.raises(StopRequested):
        greedy_coreset(features, 0.5, should_stop=stop_on_third_call)  # 1000 steps unasked
    assert len(calls) == 3  # polled at steps 0, 64, 128: stopped there, not after 1000 steps
    never = greedy_coreset(features, 0.5, should_stop=lambda: False)
    torch.testing.assert_close(never, greedy_coreset(features, 0.5))  # same selection

    detector = AnomalyDetector("test_resnet", coreset_fraction=0.5)
    detector.add_good(torch.rand(8, 3, 32, 32))  # 8 * 64 patches: 256 steps
    calls.clear()
    with pytest.raises(SIGTERMException):
        detector.build_bank(should_stop=stop_on_third_call)
    assert len(calls) == 3 < 256 // STOP_CHECK_EVERY  # a full selection polls 4 times
    assert detector.memory_bank.numel() == 0 and not detector._good  # nothing half-built


class _SigtermAfterTraining(L.Callback):
    """Delivers SIGTERM through the handler Lightning installed, after the last batch."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == trainer.num_training_batches - 1:
            handler = signal.getsignal(signal.SIGTERM)
            assert callable(handler), "Lightning installs a SIGTERM handler during fit"
            handler(signal.SIGTERM, None)


def test_item3_sigterm_during_fit_stops_the_bank_build_in_process(tmp_path, monkeypatch):
    import lit_ssl.anomaly.detector as detector_module

    calls = []
    original = detector_module.greedy_coreset

    def counting(*args, should_stop=None, **kwargs):
        def counted() -> bool:
            calls.append(should_stop())
            return calls[-1]

        return original(*args, should_stop=counted, **kwargs)

    monkeypatch.setattr(detector_module, "greedy_coreset", counting)
    root = write_synthetic_dataset(
        tmp_path / "line", image_size=32, n_train=16, n_test_good=2, n_per_defect=1, seed=0
    )
    data = FactoryDataModule(str(root), task="anomaly", image_size=32, batch_size=8)
    detector = AnomalyDetector("test_resnet", coreset_fraction=0.5)
    trainer = L.Trainer(
        max_epochs=1, callbacks=[_SigtermAfterTraining()], **trainer_kwargs(tmp_path)
    )
    with pytest.raises(SIGTERMException):
        trainer.fit(detector, data)
    assert calls == [True]  # the coreset loop saw the flag at its first check and stopped
    assert detector.memory_bank.numel() == 0


def _read_into(stream, chunks: list[bytes], seen: threading.Event, marker: bytes) -> None:
    for chunk in iter(lambda: os.read(stream.fileno(), 4096), b""):
        chunks.append(chunk)
        if marker in b"".join(chunks[-2:]):
            seen.set()
    seen.set()  # the stream closed: stop waiting


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_item3_sigterm_stops_a_long_lit_ssl_fit_within_seconds(tmp_path):
    """A real ``lit-ssl fit`` whose coreset would run for a minute or more (131 k patches;
    half as many took 15 s on one core) gets SIGTERM once its progress bar shows, and exits
    143 within seconds, without a checkpoint."""
    write_synthetic_dataset(
        tmp_path / "mv", image_size=256, n_train=32, n_test_good=2, n_per_defect=1, seed=0
    )
    size, fraction = ["--data.image_size", "256"], ["--model.coreset_fraction", "0.9"]
    args = [*TINY, *size, "--data.root", "mv", *fraction]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-c",
        "import sys; from lit_ssl.cli.main import main; sys.exit(main())",
    ]
    process = subprocess.Popen(
        [*command, "fit", *args], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    chunks: list[bytes] = []
    in_coreset = threading.Event()
    reader = threading.Thread(
        target=_read_into, args=(process.stderr, chunks, in_coreset, b"coreset"), daemon=True
    )
    reader.start()
    try:
        assert in_coreset.wait(timeout=120), "the coreset progress bar never showed"
        assert process.poll() is None, b"".join(chunks).decode()[-2000:]
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = process.wait(timeout=30)
        stopped_after = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=5)
    err = b"".join(chunks).decode(errors="replace")
    assert code == 143, err[-2000:]
    assert "stopped by SIGTERM" in err
    print(f"stopped {stopped_after:.1f} s after SIGTERM")
    assert stopped_after < 10, f"took {stopped_after:.1f} s to stop"
    assert not list((tmp_path / "runs").rglob("*.ckpt")), "no checkpoint of a partial bank"


# ----------------------------------------------------------------------- item 8: arguments
@pytest.mark.parametrize(
    ("backbone", "kwargs", "message"),
    [
        ("resnet10t", {"layers": [9]}, r"layers=\[9\]: resnet10t has stages 0\.\.4"),
        ("resnet10t", {"layers": []}, "non-empty list of stage indices"),
        ("test_resnet", {"layers": [1, 1]}, "names a stage twice"),
        ("test_resnet", {"layers": [1, -4]}, "names a stage twice"),  # -4 is stage 1
        ("test_resnet", {"layers": [5]}, r"test_resnet has stages 0\.\.4"),
        ("test_vit", {"layers": [6]}, r"test_vit has stages 0\.\.5"),
        ("test_resnet", {"neighbourhood": 0}, "positive odd integer"),
        ("test_resnet", {"neighbourhood": -3}, "positive odd integer"),
        ("test_resnet", {"neighbourhood": 2}, "positive odd integer"),
    ],
)
def test_item8_bad_layers_and_neighbourhood_are_refused(backbone, kwargs, message):
    with pytest.raises(ValueError, match=message):
        AnomalyDetector(backbone, **kwargs)


def test_item8_valid_arguments_still_work_and_the_cli_says_what_is_allowed(tmp_path, capsys):
    AnomalyDetector("test_vit", layers=[4, 5], neighbourhood=1)
    detector = AnomalyDetector("resnet10t", layers=(2, 3), neighbourhood=5, coreset_fraction=1.0)
    detector.add_good(torch.rand(1, 3, 32, 32))
    detector.build_bank()
    code, text = _cli(["fit", *TINY, "--model.layers", "[9]"], tmp_path, capsys)
    assert code == 2
    error = text[text.index("lit-ssl: error:") :].strip().splitlines()
    assert len(error) <= 2 and "layers=[9]: test_resnet has stages 0..4" in error[0]
    assert "Traceback" not in text
