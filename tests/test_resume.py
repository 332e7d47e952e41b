"""Real resume (checkpoints with the whole training state, ``fit(..., resume_from=...)``) and
learning-rate schedulers as callbacks.

The central check: training 10 epochs equals training 5, writing a checkpoint, and training
5 more in a fresh Python process (same weights bit for bit, same loss history), with every
source of randomness in play: dropout (torch's generator), shuffled loaders (their own
generators), a callback drawing from numpy's and Python's global generators, a learning-rate
schedule, early-stopping and best-value bookkeeping.
"""
import functools
import importlib.util
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler as L

from inferno import (AbsCallback, DataPair, DataSet, EarlyStopping, LossTracker, ModelWrapper, SaveBest,
                     WeightedDataLoader)
from inferno.training.callbacks import Checkpoint, LRScheduler, OneCycle

ROOT = Path(__file__).resolve().parents[1]

# The set-up shared by this process and the fresh one (written to a file, imported by both).
SETUP = '''
import functools, random
import numpy as np
import torch
from torch import nn
from torch.optim import lr_scheduler as L
from inferno import (AbsCallback, DataPair, DataSet, EarlyStopping, LossTracker, ModelWrapper,
                     SaveBest, WeightedDataLoader)
from inferno.training.callbacks import Checkpoint, LRScheduler

ADAM = functools.partial(torch.optim.Adam, lr=2e-2)


def make_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 1))


def make_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.float32)
    w = rng.uniform(0.5, 2.0, size=300)
    return DataPair(WeightedDataLoader(DataSet(x, y, w), 64, shuffle=True, seed=1),
                    WeightedDataLoader(DataSet(x[:90], y[:90], w[:90]), 32, shuffle=True, seed=2))


class Noise(AbsCallback):
    """Training inputs jittered with numpy's and Python's global generators."""
    def on_batch_begin(self):
        wr = self.wrapper
        if wr.state == "train":
            eps = np.random.normal(scale=0.1, size=tuple(wr.x.shape)).astype(np.float32)
            wr.x = wr.x + torch.from_numpy(eps) * random.random()


def make_cbs(ckpt):
    # Checkpoint first: it still writes after every other callback has finished the epoch
    return [Checkpoint(ckpt), LossTracker(), Noise(), EarlyStopping(patience=50), SaveBest(ckpt + ".best", auto_reload=False),
            LRScheduler(functools.partial(L.StepLR, step_size=3, gamma=0.7))]


def seed_globals(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def train(n_epochs, ckpt, resume=False, extra=()):
    wr = ModelWrapper(make_net())
    cbs = make_cbs(ckpt) + list(extra)
    hist = wr.fit(n_epochs, make_data(), ADAM, nn.BCEWithLogitsLoss(), cbs=cbs, progress=False,
                  resume_from=ckpt if resume else None)
    return wr, cbs, hist


def summary(wr, cbs, hist):
    es, sb, sched = cbs[3], cbs[4], cbs[5]
    return {"params": {k: v.clone() for k, v in wr.model.state_dict().items()},
            "opt": wr.opt.state_dict(), "history": hist, "epoch": wr.epoch,
            "early": es.state_dict(), "best": sb.state_dict(), "lr": sched.lr,
            "sched": sched.scheduler.state_dict()["last_epoch"],
            "torch_rng": torch.get_rng_state(), "np_rng": float(np.random.random())}
'''

SCRIPT = '''
import sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from resume_setup import seed_globals, summary, train
seed_globals(12345)  # another seed than the interrupted run's: everything comes from the checkpoint
wr, cbs, hist = train(10, sys.argv[2], resume=True)
torch.save(summary(wr, cbs, hist), sys.argv[3])
'''


@pytest.fixture
def setup_module_file(tmp_path, monkeypatch):
    monkeypatch.setenv("INFERNO_QUIET", "1")
    (tmp_path / "resume_setup.py").write_text(textwrap.dedent(SETUP))
    spec = importlib.util.spec_from_file_location("resume_setup", tmp_path / "resume_setup.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same reductions as the fresh process
    yield mod
    torch.set_num_threads(threads)


class Interrupt(AbsCallback):
    """Kills the training at the start of epoch ``at`` (after the previous one's checkpoint)."""

    def __init__(self, at):
        self.at = at

    def on_epoch_begin(self):
        if self.wrapper.epoch == self.at:
            raise KeyboardInterrupt


def _equal_states(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal_states(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal_states(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


def test_resume_in_a_fresh_process_equals_uninterrupted_training(setup_module_file, tmp_path):
    S = setup_module_file
    # uninterrupted: 10 epochs
    S.seed_globals(7)
    ref = S.summary(*S.train(10, str(tmp_path / "full.pt")))
    # interrupted after 5 epochs
    S.seed_globals(7)
    ckpt = str(tmp_path / "ckpt.pt")
    with pytest.raises(KeyboardInterrupt):
        S.train(10, ckpt, extra=[Interrupt(6)])
    saved = torch.load(ckpt, weights_only=True)
    assert saved["training"]["epoch"] == 5 and len(saved["training"]["callbacks"]) == 7  # with Interrupt
    # resumed in a fresh process
    out = tmp_path / "resumed.pt"
    env = {**os.environ, "INFERNO_QUIET": "1", "PYTHONPATH": str(ROOT)}
    (tmp_path / "resume_script.py").write_text(textwrap.dedent(SCRIPT))
    proc = subprocess.run([sys.executable, str(tmp_path / "resume_script.py"), str(tmp_path), ckpt, str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = torch.load(out, weights_only=True)

    assert got["epoch"] == ref["epoch"] == 10
    for k, v in ref["params"].items():
        assert torch.equal(got["params"][k], v), k  # bit for bit
    assert got["history"] == ref["history"] and len(ref["history"]["valid"]) == 10
    assert _equal_states(got["opt"], ref["opt"])
    assert got["early"] == ref["early"] and got["best"] == ref["best"]
    assert got["lr"] == ref["lr"] and got["sched"] == ref["sched"] == 10
    assert ref["lr"][0] == pytest.approx(2e-2 * 0.7 ** 3)
    assert torch.equal(got["torch_rng"], ref["torch_rng"]) and got["np_rng"] == ref["np_rng"]
    # the interruption mattered: the weights at epoch 5 differ from the final ones
    assert not torch.equal(saved["model"]["0.weight"], ref["params"]["0.weight"])


@pytest.mark.parametrize("restore_off", ["none", "numpy", "python", "torch", "loaders", "scheduler", "history"])
def test_every_piece_of_state_matters(setup_module_file, tmp_path, monkeypatch, restore_off):
    """Leaving out any one piece of the restored state breaks the exact continuation (so the
    test above checks each of them)."""
    import random

    import inferno.training.wrapper as mw
    S = setup_module_file
    S.seed_globals(3)
    ref = S.summary(*S.train(8, str(tmp_path / "full.pt")))
    S.seed_globals(3)
    ckpt = str(tmp_path / "ckpt.pt")
    with pytest.raises(KeyboardInterrupt):
        S.train(8, ckpt, extra=[Interrupt(5)])
    S.seed_globals(99)
    if restore_off in ("numpy", "python", "torch"):
        real = mw._set_rng_state

        def partial_restore(state):
            keep = (torch.get_rng_state(), np.random.get_state(), random.getstate())
            real(state)
            if restore_off == "torch":
                torch.set_rng_state(keep[0])
            elif restore_off == "numpy":
                np.random.set_state(keep[1])
            else:
                random.setstate(keep[2])
        monkeypatch.setattr(mw, "_set_rng_state", partial_restore)
    elif restore_off == "loaders":  # a checkpoint without the loaders' generators
        st = torch.load(ckpt, weights_only=True)
        st["training"]["loaders"] = {}
        torch.save(st, ckpt)
    elif restore_off == "scheduler":
        monkeypatch.setattr(LRScheduler, "load_state_dict", lambda self, st: None)
    elif restore_off == "history":
        monkeypatch.setattr(LossTracker, "load_state_dict", lambda self, st: None)
    got = S.summary(*S.train(8, ckpt, resume=True))
    if restore_off == "none":  # the control: everything restored, an exact continuation
        assert all(torch.equal(got["params"][k], v) for k, v in ref["params"].items())
        assert got["history"] == ref["history"]
    elif restore_off == "history":
        assert got["history"] != ref["history"] and len(got["history"]["train"]) == 4
    else:
        assert not all(torch.equal(got["params"][k], v) for k, v in ref["params"].items())


def test_one_cycle_per_batch_resume_without_validation(tmp_path):
    """Per-batch schedule, no validation set (the training phase is the epoch's last)."""
    def run(n, ckpt, resume=False, stop_at=None):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
        rng = np.random.default_rng(0)
        x = rng.normal(size=(200, 3)).astype(np.float32)
        data = DataPair(WeightedDataLoader(DataSet(x, x[:, :1] * 2), 50, shuffle=True, seed=5))
        oc = OneCycle(0.05)
        cbs = [oc, Checkpoint(ckpt)] + ([Interrupt(stop_at)] if stop_at else [])
        wr = ModelWrapper(net)
        h = wr.fit(n, data, functools.partial(torch.optim.Adam, lr=1e-3), nn.MSELoss(), cbs=cbs,
                   progress=False, resume_from=ckpt if resume else None)
        return wr, h, oc

    wr, h, oc = run(6, str(tmp_path / "a.pt"))
    with pytest.raises(KeyboardInterrupt):
        run(6, str(tmp_path / "b.pt"), stop_at=4)
    wr2, h2, oc2 = run(6, str(tmp_path / "b.pt"), resume=True)
    assert h2 == h and h["valid"] == [] and len(h["train"]) == 6
    assert all(torch.equal(p, q) for p, q in zip(wr.model.parameters(), wr2.model.parameters()))
    assert oc2.scheduler.last_epoch == oc.scheduler.last_epoch == 6 * 4
    assert oc2.lr == oc.lr and wr2.opt.param_groups[0]["betas"] == wr.opt.param_groups[0]["betas"]


# --------------------------------------------------------------------------- checkpoints
def _net(seed=0, hidden=16):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, 1))


def _data(n=200, bs=50, val=True):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    trn = WeightedDataLoader(DataSet(x, y), bs, shuffle=True, seed=0)
    return DataPair(trn, WeightedDataLoader(DataSet(x[:60], y[:60]), 30) if val else None)


ADAM = functools.partial(torch.optim.Adam, lr=1e-2)
BCE = nn.BCEWithLogitsLoss()


def test_checkpoint_contents_and_every(tmp_path):
    cb = Checkpoint(tmp_path / "ck_{epoch:02d}.pt", every=2)
    wr = ModelWrapper(_net())
    wr.fit(5, _data(), ADAM, BCE, cbs=[cb, EarlyStopping(3)], progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck_02.pt", "ck_04.pt", "ck_05.pt"]  # + the last
    assert cb.last_path == tmp_path / "ck_05.pt"
    st = torch.load(cb.last_path, weights_only=True)
    tr = st["training"]
    assert st["format"] == "inferno.checkpoint" and tr["epoch"] == 5 and tr["n_epochs"] == 5
    assert tr["opt_class"] == "Adam" and set(st["opt"]) == {"state", "param_groups"}
    assert [c["class"] for c in tr["callbacks"]] == ["LossTracker", "Checkpoint", "EarlyStopping"]
    assert len(tr["callbacks"][0]["state"]["losses"]["valid"]) == 5
    assert set(tr["callbacks"][2]["state"]) == {"best", "epochs_since_best"}
    assert set(tr["rng"]) == {"torch", "numpy", "python", "cuda"} and tr["rng"]["cuda"] is None
    assert set(tr["loaders"]) == {"trn_dl", "val_dl"} and tr["loaders"]["trn_dl"]["n"] == 200
    # ModelWrapper.load reads the weights of a full checkpoint (as of a save file)
    other = ModelWrapper(_net(seed=1))
    other.load(cb.last_path)
    assert all(torch.equal(p, q) for p, q in zip(other.model.parameters(), wr.model.parameters()))


def test_checkpoint_written_when_training_stops_early(tmp_path):
    class FakeLoss(AbsCallback):
        requires_grad_in_valid = True

        def on_forwards_end(self):
            wr = self.wrapper
            wr.loss_val = wr.y_pred.sum() * 0 + (1.0 if wr.state == "valid" else 0.5)

    cb = Checkpoint(tmp_path / "ck.pt", every=100)
    wr = ModelWrapper(_net())
    wr.fit(20, _data(), ADAM, None, cbs=[FakeLoss(), EarlyStopping(2), cb], progress=False)
    assert wr.stop and wr.epoch == 3
    assert torch.load(cb.last_path, weights_only=True)["training"]["epoch"] == 3


def test_save_checkpoint_after_fit_then_resume_more_epochs(tmp_path):
    wr = ModelWrapper(_net())
    wr.fit(2, _data(), ADAM, BCE, progress=False)
    wr.save_checkpoint(tmp_path / "c.pt")
    wr2 = ModelWrapper(_net(seed=5))
    h = wr2.fit(4, _data(), ADAM, BCE, progress=False, resume_from=tmp_path / "c.pt")
    assert len(h["train"]) == 4 and h["train"][:2] == wr.loss_tracker.losses["train"] and wr2.epoch == 4
    # nothing left to do: the history is returned, the weights unchanged
    wr2.save_checkpoint(tmp_path / "d.pt")
    before = [p.clone() for p in wr2.model.parameters()]
    h2 = ModelWrapper(_net()).fit(4, _data(), ADAM, BCE, progress=False, resume_from=tmp_path / "d.pt")
    assert h2 == h
    wr3 = ModelWrapper(_net())
    wr3.load(tmp_path / "d.pt")
    assert all(torch.equal(p, q) for p, q in zip(wr3.model.parameters(), before))


def test_atomic_checkpoint(tmp_path, monkeypatch):
    wr = ModelWrapper(_net())
    wr.fit(1, _data(), ADAM, BCE, progress=False)
    path = tmp_path / "c.pt"
    wr.save_checkpoint(path)
    good = path.read_bytes()
    wr.fit(1, _data(), ADAM, BCE, progress=False)

    def exploding_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        wr.save_checkpoint(path)
    monkeypatch.undo()
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_resume_bad_input(tmp_path):
    wr = ModelWrapper(_net())
    wr.fit(2, _data(), ADAM, BCE, progress=False, cbs=[Checkpoint(tmp_path / "c.pt")])
    fit = functools.partial(ModelWrapper.fit, data=_data(), loss=BCE, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        fit(ModelWrapper(_net()), 4, opt=ADAM, resume_from=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="architecture"):
        fit(ModelWrapper(_net(hidden=8)), 4, opt=ADAM, resume_from=tmp_path / "c.pt")
    with pytest.raises(ValueError, match="optimiser Adam.*SGD"):
        fit(ModelWrapper(_net()), 4, opt=functools.partial(torch.optim.SGD, lr=0.1), resume_from=tmp_path / "c.pt")
    with pytest.raises(ValueError, match="at epoch 2.*must be >= 2, got 1"):
        fit(ModelWrapper(_net()), 1, opt=ADAM, resume_from=tmp_path / "c.pt")
    wr.save(tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="weights only"):
        fit(ModelWrapper(_net()), 4, opt=ADAM, resume_from=tmp_path / "weights.pt")
    st = torch.load(tmp_path / "c.pt", weights_only=True)
    st["version"] = 99
    torch.save(st, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="version 99, newer"):
        fit(ModelWrapper(_net()), 4, opt=ADAM, resume_from=tmp_path / "future.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        fit(ModelWrapper(_net()), 4, opt=ADAM, resume_from=tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="is a folder"):
        fit(ModelWrapper(_net()), 4, opt=ADAM, resume_from=tmp_path)
    with pytest.raises(RuntimeError, match="no training has started"):
        ModelWrapper(_net()).save_checkpoint(tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError, match="Checkpoint: the folder"):
        ModelWrapper(_net()).fit(1, _data(), ADAM, BCE, cbs=[Checkpoint(tmp_path / "no" / "c.pt")])
    with pytest.raises(ValueError, match="every"):
        Checkpoint(tmp_path / "c.pt", every=0)


def test_resume_with_other_callbacks_or_data_warns(tmp_path):
    sched = functools.partial(L.StepLR, step_size=1)
    ModelWrapper(_net()).fit(2, _data(), ADAM, BCE, progress=False,
                             cbs=[EarlyStopping(5), LRScheduler(sched), Checkpoint(tmp_path / "c.pt")])
    with pytest.warns(UserWarning, match=r"\['EarlyStopping'\] have no callback"):
        ModelWrapper(_net()).fit(3, _data(), ADAM, BCE, progress=False, resume_from=tmp_path / "c.pt",
                                 cbs=[LRScheduler(sched)])
    with pytest.warns(UserWarning, match=r"\['SaveBest'\] start afresh"):
        ModelWrapper(_net()).fit(3, _data(), ADAM, BCE, progress=False, resume_from=tmp_path / "c.pt",
                                 cbs=[EarlyStopping(5), LRScheduler(sched), SaveBest(tmp_path / "b.pt")])
    with pytest.warns(UserWarning, match="trn_dl loader has 100 events.*not an exact continuation"):
        ModelWrapper(_net()).fit(3, _data(n=100), ADAM, BCE, progress=False, resume_from=tmp_path / "c.pt",
                                 cbs=[EarlyStopping(5), LRScheduler(sched)])
    with pytest.raises(ValueError, match="StepLR scheduler.*ExponentialLR"):
        ModelWrapper(_net()).fit(3, _data(), ADAM, BCE, progress=False, resume_from=tmp_path / "c.pt",
                                 cbs=[EarlyStopping(5), LRScheduler(functools.partial(L.ExponentialLR, gamma=0.9))])


def test_callback_state_dicts_round_trip():
    lt, es, sb = LossTracker(), EarlyStopping(3), SaveBest("x.pt")
    lt.losses = {"train": [1.0, 0.5], "valid": [2.0, 1.5]}
    es.best, es.epochs_since_best = 0.25, 2
    sb.best, sb.best_epoch = 0.125, 4
    lt2, es2, sb2 = LossTracker(), EarlyStopping(3), SaveBest("x.pt")
    for a, b in ((lt, lt2), (es, es2), (sb, sb2)):
        b.load_state_dict(a.state_dict())
        assert b.state_dict() == a.state_dict() and b.state_dict()
    assert lt2.losses == lt.losses and lt2.losses is not lt.losses
    assert (es2.best, es2.epochs_since_best) == (0.25, 2) and (sb2.best, sb2.best_epoch) == (0.125, 4)
    assert AbsCallback().state_dict() == {} and Checkpoint("c.pt").state_dict() == {}


# --------------------------------------------------------------------------- schedulers
class LRProbe(AbsCallback):
    """The learning rate (and Adam's beta1) in use for every training batch, per epoch."""

    def on_train_begin(self):
        self.lrs, self.betas = [], []

    def on_epoch_begin(self):
        if self.wrapper.state == "train":
            self.lrs.append([])
            self.betas.append([])

    def on_batch_begin(self):
        if self.wrapper.state == "train":
            g = self.wrapper.opt.param_groups[0]
            self.lrs[-1].append(g["lr"])
            self.betas[-1].append(g.get("betas", (None,))[0])


def _by_hand(make_sched, n_epochs, n_batches, per_batch, opt_cls=torch.optim.Adam, lr=1e-2):
    """The learning rates of the same schedule with torch's scheduler stepped by hand."""
    opt = opt_cls([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make_sched(opt)
    lrs, betas = [], []
    for _ in range(n_epochs):
        lrs.append([])
        betas.append([])
        for _ in range(n_batches):
            lrs[-1].append(opt.param_groups[0]["lr"])
            betas[-1].append(opt.param_groups[0].get("betas", (None,))[0])
            opt.step()
            if per_batch:
                sched.step()
        if not per_batch:
            sched.step()
    return lrs, betas


@pytest.mark.parametrize("val", [True, False])
def test_step_lr_per_epoch_equals_torch(val):
    factory = functools.partial(L.StepLR, step_size=2, gamma=0.5)
    probe = LRProbe()
    cb = LRScheduler(factory)
    ModelWrapper(_net()).fit(7, _data(val=val), ADAM, BCE, cbs=[cb, probe], progress=False)
    assert probe.lrs == _by_hand(factory, 7, 4, per_batch=False)[0]
    assert [e[0] for e in probe.lrs] == [1e-2, 1e-2, 5e-3, 5e-3, 2.5e-3, 2.5e-3, 1.25e-3]
    assert cb.scheduler.last_epoch == 7 and cb.lr == [1e-2 / 8]


def test_exponential_per_batch_equals_torch():
    factory = functools.partial(L.ExponentialLR, gamma=0.9)
    probe = LRProbe()
    ModelWrapper(_net()).fit(3, _data(), ADAM, BCE, cbs=[LRScheduler(factory, interval="batch"), probe],
                             progress=False)
    expected = _by_hand(factory, 3, 4, per_batch=True)[0]
    assert probe.lrs == expected and len(set(sum(expected, []))) == 12  # a new rate every batch


def test_one_cycle_equals_torch():
    probe = LRProbe()
    oc = OneCycle(0.1, pct_start=0.25)
    ModelWrapper(_net()).fit(5, _data(), ADAM, BCE, cbs=[oc, probe], progress=False)
    lrs, betas = _by_hand(lambda o: L.OneCycleLR(o, max_lr=0.1, total_steps=20, pct_start=0.25), 5, 4, per_batch=True)
    assert probe.lrs == lrs and probe.betas == betas
    flat = sum(probe.lrs, [])
    assert flat[0] == pytest.approx(0.1 / 25) and max(flat) == pytest.approx(0.1) and flat[-1] < 1e-4
    assert min(sum(probe.betas, [])) == pytest.approx(0.85) and oc.scheduler.last_epoch == 20
    with pytest.raises(ValueError, match="pct_start"):
        OneCycle(0.1, pct_start=1.5)


def test_reduce_on_plateau_reads_the_validation_loss():
    class FakeLoss(AbsCallback):
        requires_grad_in_valid = True
        vals = [3.0, 2.0, 2.5, 2.6, 2.7, 2.8]

        def on_forwards_end(self):
            wr = self.wrapper
            v = self.vals[wr.epoch - 1] if wr.state == "valid" else 0.0
            wr.loss_val = (wr.y_pred ** 2).mean() * 1e-3 + v

    probe = LRProbe()
    cb = LRScheduler(functools.partial(L.ReduceLROnPlateau, patience=1, factor=0.1))
    ModelWrapper(_net()).fit(6, _data(), ADAM, None, cbs=[FakeLoss(), cb, probe], progress=False)
    # best at epoch 2; epochs 3 and 4 without improvement -> reduced from epoch 5 on
    assert [e[0] for e in probe.lrs] == pytest.approx([1e-2] * 4 + [1e-3, 1e-3])


def test_scheduler_bad_input():
    with pytest.raises(ValueError, match="interval"):
        LRScheduler(L.StepLR, interval="week")
    with pytest.raises(TypeError, match="callable"):
        LRScheduler("StepLR")
    fit = functools.partial(ModelWrapper(_net()).fit, 1, _data(), ADAM, BCE, progress=False)
    with pytest.raises(TypeError, match="lr_scheduler"):
        fit(cbs=[LRScheduler(lambda opt: 0.1)])
    other = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="another optimiser"):
        fit(cbs=[LRScheduler(lambda opt: L.StepLR(other, 1))])
    with pytest.raises(ValueError, match="interval='epoch'"):
        fit(cbs=[LRScheduler(L.ReduceLROnPlateau, interval="batch")])
    assert math.isfinite(fit(cbs=[LRScheduler(functools.partial(L.StepLR, step_size=1))])["train"][0])


def test_predict_between_fit_and_checkpoint_keeps_the_fits_callbacks(tmp_path):
    wr = ModelWrapper(_net())
    wr.fit(2, _data(), ADAM, BCE, progress=False, cbs=[EarlyStopping(4)])
    wr.predict(np.zeros((3, 3), np.float32))  # replaces wrapper.cbs by the prediction's
    wr.save_checkpoint(tmp_path / "c.pt")
    tr = torch.load(tmp_path / "c.pt", weights_only=True)["training"]
    assert [c["class"] for c in tr["callbacks"]] == ["LossTracker", "EarlyStopping"]
    h = ModelWrapper(_net()).fit(3, _data(), ADAM, BCE, progress=False, cbs=[EarlyStopping(4)],
                                 resume_from=tmp_path / "c.pt")
    assert h["train"][:2] == wr.loss_tracker.losses["train"] and len(h["train"]) == 3


def test_named_schedules():
    """``schedule(name, lr, epochs)`` (the CLIs' ``--schedule``): none is constant, onecycle peaks
    at 3 lr and anneals, cosine equals torch's CosineAnnealingLR over the epochs."""
    from inferno.training import SCHEDULES, schedule

    assert SCHEDULES == ("none", "onecycle", "cosine") and schedule("none", 1e-2, 5) == []
    runs = {}
    for name in ("onecycle", "cosine"):
        probe = LRProbe()
        ModelWrapper(_net()).fit(5, _data(), ADAM, BCE, cbs=[*schedule(name, 1e-2, 5), probe], progress=False)
        runs[name] = probe.lrs
    flat = sum(runs["onecycle"], [])
    assert max(flat) == pytest.approx(3e-2) and flat[-1] < 1e-5
    assert runs["cosine"] == _by_hand(lambda o: L.CosineAnnealingLR(o, T_max=5), 5, 4, per_batch=False)[0]
    assert runs["cosine"][0][0] == 1e-2 and runs["cosine"][-1][0] < 1e-3
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'step'"):
        schedule("step", 1e-2, 5)
