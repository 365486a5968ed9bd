"""training.batches: batches made ahead in worker processes are the ones made inline, in the same order, and a
checkpoint written while batches are in flight resumes exactly."""
import numpy as np
import pytest
import torch

from helpers import fake_split, train_args
from models import create_model
from training import train as train_mod
from training.augment import RealFraming
from training.batches import BatchMaker


def camera_framing() -> RealFraming:
    """Re-framing and a camera recording (blur, noise, JPEG/H.264) drawn per face: the costly, seeded part."""
    return RealFraming(routes=("area",), camera=(("camera", 1.0),))


def batches(workers: int, count: int, seed: int = 3) -> tuple[list, list]:
    """(`count` batches, the sampler state before each) from a maker with `workers` processes."""
    generator = torch.Generator().manual_seed(seed)
    made, states = [], []
    with BatchMaker(fake_split(6), generator, batch=3, augment=camera_framing(), workers=workers) as maker:
        for _ in range(count):
            states.append(maker.sampler_state())
            made.append(maker.next())
    return made, states


def test_workers_make_the_batches_made_inline_in_order():
    inline, inline_states = batches(0, 5)
    ahead, ahead_states = batches(2, 5)
    for one, other in zip(inline, ahead):
        for a, b in zip(one, other):
            assert np.array_equal(a, b)
    assert all(torch.equal(a, b) for a, b in zip(inline_states, ahead_states))
    assert not np.array_equal(inline[0][1], inline[1][1])  # the batches do differ


def test_a_negative_worker_count_is_refused():
    with pytest.raises(ValueError, match="workers"):
        BatchMaker(fake_split(2), torch.Generator(), batch=2, workers=-1)


def test_training_with_workers_matches_and_resumes_exactly(fake_data_dir, tmp_path):
    train_mod.train(train_args(fake_data_dir, tmp_path / "inline", "--iters", "4"))
    train_mod.train(train_args(fake_data_dir, tmp_path / "ahead", "--iters", "4", "--data-workers", "2"))
    train_mod.train(train_args(fake_data_dir, tmp_path / "halves", "--iters", "2", "--data-workers", "2"))
    train_mod.train(train_args(fake_data_dir, tmp_path / "halves", "--iters", "4", "--data-workers", "1",
                               "--resume", str(tmp_path / "halves" / "checkpoint.pt")))
    inline = create_model("dic", weights=tmp_path / "inline" / "last.safetensors").state_dict()
    for run in ("ahead", "halves"):
        other = create_model("dic", weights=tmp_path / run / "last.safetensors").state_dict()
        for k in inline:
            assert torch.equal(inline[k], other[k]), (run, k)


def test_data_workers_must_not_be_negative(capsys):
    with pytest.raises(SystemExit):
        train_mod.parse_args(["--data-workers", "-1"])
    assert "--data-workers" in capsys.readouterr().err


def test_a_worker_that_dies_is_a_clear_error():
    import os
    import signal
    import time

    generator = torch.Generator().manual_seed(0)
    with BatchMaker(fake_split(4), generator, batch=2, workers=1) as maker:
        maker.next()  # the worker is up
        time.sleep(1.0)  # and has made the batches queued behind it (a worker killed mid-write can hang its pool)
        for pid in list(maker.pool._processes):
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match="worker process died"):
            for _ in range(4):  # batches made before the kill may still arrive
                maker.next()
