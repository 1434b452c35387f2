"""kryflow's FNO against neuraloperator's FNO and TFNO on neuraloperator's small Darcy set, in one run.

Every model trains through kryflow's own trainer at the same budget: the same files (imported by
``kryflow.data.import_neuraloperator_darcy``, 10% of the train file held out for validation, as in
``config/peer_darcy.yaml``), the same number of epochs and steps, batch, AdamW with the same
learning rate and weight decay, relative-L2 loss and cosine schedule, one thread. All are scored
with one metric, the mean relative L2 error of the physical (de-normalised) solution on the 50 test
samples at 16×16 (and, for information, zero-shot at 32×32), beside the trainer's seconds per step
and the parameter count. Writes ``results/benchmarks/peer_darcy.json``.

* ``fno``: kryflow's FNO, about 100k parameters (``--width``, ``--modes``).
* ``neuralop_fno``, ``neuralop_tfno`` (the ``neuralop`` extra; skipped and said so where it is
  absent): neuraloperator's FNO as its Darcy example builds it (n_modes 16 per axis, 32 hidden
  channels, projection ratio 2; ``--nop-modes``, ``--nop-width``) and the same TFNO with
  Tucker-factorised spectral weights (``--tfno-rank``), as kryflow model entries.
* ``neuraloperator example`` (``--example``): neuraloperator's own pipeline as published in
  ``examples/models/plot_FNO_darcy.py``: the FNO above, AdamW lr 8e-3, weight decay 1e-4, cosine
  annealing with T_max 30, H1 training loss, all 1000 training samples in unshuffled batches of
  32, an output normaliser fitted on the training set, its ``Trainer``; only the number of epochs
  is the common budget.

Usage (``pip install -e ".[neuralop]"`` for neuraloperator's models):
    nice -n 10 python benchmarks/peer_darcy_compare.py --example
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch


def rel_l2(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per-sample ‖pred − true‖ / ‖true‖ over all non-batch axes, shape (B,)."""
    b = pred.shape[0]
    return (pred - true).reshape(b, -1).norm(dim=1) / true.reshape(b, -1).norm(dim=1)


def import_store(data: Path, work: Path) -> Path:
    from kryflow.data import import_neuraloperator_darcy

    store = work / "nop_darcy16.zarr"
    import_neuraloperator_darcy(data / "darcy_train_16.pt", data / "darcy_test_16.pt", store,
                                test_hi_pt=data / "darcy_test_32.pt", val_fraction=0.1, seed=0)
    return store


def run_kryflow(store: Path, work: Path, model_name: str, model_kwargs: dict, args) -> dict:
    """Train registered model ``model_name`` on the imported store; score it at 16x16 and 32x32."""
    from kryflow.data import make_loader
    from kryflow.models import parameter_count
    from kryflow.training import train_cell
    from kryflow.training.surrogate import load_surrogate

    steps_per_epoch = len(make_loader(store, "train", batch_size=args.batch_size, shuffle=True, seed=args.seed))
    cfg = {"batch_size": args.batch_size, "max_steps": args.epochs * steps_per_epoch, "loss": "rel_l2",
           "scheduler": {"kind": "cosine"}, "eval_every": 10**9, "checkpoint_every": 10**9, "device": "cpu"}
    run_dir = work / f"run_{model_name}"
    result = train_cell(store, run_dir, model_name=model_name, model_kwargs=model_kwargs, optimizer_name="adamw",
                        optimizer_kwargs={"lr": args.lr, "weight_decay": 1e-4}, seed=args.seed, train_cfg=cfg,
                        progress=False)
    surrogate = load_surrogate(run_dir / "model.pt").eval()
    scores = {}
    for res, path in ((16, store), (32, store.with_name(store.stem + "_32.zarr"))):
        errs = []
        with torch.no_grad():
            for x, y in make_loader(path, "test", batch_size=50, shuffle=False):
                errs.append(rel_l2(surrogate(x), y))
        scores[res] = float(torch.cat(errs).mean())
    return {"model": model_name, "model_kwargs": model_kwargs,
            "parameters": parameter_count(model_name, in_channels=1, out_channels=1, dim=2, **model_kwargs),
            "optimizer": "adamw", "lr": args.lr, "weight_decay": 1e-4, "loss": "rel_l2",
            "schedule": "cosine to 0 over the run",
            "train_samples": sum(len(y) for _, y in make_loader(store, "train", batch_size=256, shuffle=False)),
            "epochs": args.epochs, "steps": result["steps"], "status": result["status"],
            "train_seconds": result["train_seconds"], "seconds_per_step": result["seconds_per_step"],
            "test_rel_l2_16": scores[16], "test_rel_l2_32": scores[32]}


def run_neuraloperator(data: Path, args) -> dict:
    from neuralop import H1Loss, LpLoss, Trainer
    from neuralop.data.datasets.darcy import DarcyDataset
    from neuralop.models import FNO

    torch.manual_seed(args.seed)
    dataset = DarcyDataset(root_dir=data, n_train=1000, n_tests=[50, 50], batch_size=32, test_batch_sizes=[32, 32],
                           train_resolution=16, test_resolutions=[16, 32], encode_input=False, encode_output=True,
                           download=False)
    # as load_darcy_flow_small builds them (num_workers 0 instead of 1 changes nothing numerically)
    train_loader = torch.utils.data.DataLoader(dataset.train_db, batch_size=32)
    test_loaders = {r: torch.utils.data.DataLoader(dataset.test_dbs[r], batch_size=32, shuffle=False)
                    for r in (16, 32)}
    processor = dataset.data_processor
    model = FNO(n_modes=(16, 16), in_channels=1, out_channels=1, hidden_channels=32, projection_channel_ratio=2)
    params = sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=8e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=30)
    trainer = Trainer(model=model, n_epochs=args.epochs, device="cpu", data_processor=processor, wandb_log=False,
                      eval_interval=args.epochs, use_distributed=False, verbose=False)
    steps = args.epochs * len(train_loader)
    t0 = time.perf_counter()
    trainer.train(train_loader=train_loader, test_loaders=test_loaders, optimizer=optimizer, scheduler=scheduler,
                  regularizer=False, training_loss=H1Loss(d=2), eval_losses={"l2": LpLoss(d=2, p=2)})
    seconds = time.perf_counter() - t0
    model.eval()
    processor.eval()
    scores = {}
    with torch.no_grad():
        for res, loader in test_loaders.items():
            errs = []
            for sample in loader:
                sample = processor.preprocess(sample)
                out, sample = processor.postprocess(model(sample["x"]), sample)
                errs.append(rel_l2(out, sample["y"]))
            scores[res] = float(torch.cat(errs).mean())
    import neuralop

    return {"model": "neuraloperator FNO (examples/models/plot_FNO_darcy.py)",
            "neuraloperator": getattr(neuralop, "__version__", "unknown"), "parameters": params,
            "model_kwargs": {"n_modes": [16, 16], "hidden_channels": 32, "projection_channel_ratio": 2},
            "optimizer": "adamw", "lr": 8e-3, "weight_decay": 1e-4, "loss": "h1",
            "schedule": "CosineAnnealingLR(T_max=30) per epoch", "train_samples": 1000, "epochs": args.epochs,
            "steps": steps, "train_seconds": seconds, "seconds_per_step": seconds / steps,
            "test_rel_l2_16": scores[16], "test_rel_l2_32": scores[32]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/peer-data/neuraloperator-darcy")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=16, help="kryflow FNO width")
    parser.add_argument("--modes", type=int, default=5, help="kryflow FNO modes per axis (one sign)")
    parser.add_argument("--nop-width", type=int, default=32, help="neuraloperator FNO/TFNO hidden channels")
    parser.add_argument("--nop-modes", type=int, default=16, help="neuraloperator n_modes per axis (both signs)")
    parser.add_argument("--tfno-rank", type=float, default=0.42, help="TFNO Tucker rank (fraction of dense)")
    parser.add_argument("--lr", type=float, default=5e-3, help="AdamW learning rate, every model alike")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=["fno", "neuralop_fno", "neuralop_tfno"])
    parser.add_argument("--example", action="store_true",
                        help="also run neuraloperator's own Darcy example pipeline (its Trainer, H1 loss)")
    parser.add_argument("--out", default="results/benchmarks/peer_darcy.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    missing = [f for f in ("darcy_train_16.pt", "darcy_test_16.pt", "darcy_test_32.pt") if not (data / f).is_file()]
    if missing:
        print(f"error: {missing} not found under {data} (pass --data)", file=sys.stderr)
        return 2
    from kryflow.models._neuralop import INSTALL, neuralop_available

    nop_kwargs = {"n_modes": args.nop_modes, "hidden_channels": args.nop_width, "projection_channel_ratio": 2.0}
    kwargs = {"fno": {"width": args.width, "modes": args.modes, "layers": 4},
              "neuralop_fno": nop_kwargs, "neuralop_tfno": {**nop_kwargs, "rank": args.tfno_rank}}
    absent = f"neuraloperator not installed ({INSTALL})"
    skipped = {m: absent for m in args.models if m.startswith("neuralop_") and not neuralop_available()}
    out = {"data": str(data.resolve()), "torch": torch.__version__, "machine": platform.processor(),
           "threads": args.threads, "metric": "mean relative L2 of the physical solution over the test samples",
           "budget": {"epochs": args.epochs, "batch_size": args.batch_size, "optimizer": "adamw", "lr": args.lr,
                      "weight_decay": 1e-4, "loss": "rel_l2", "schedule": "cosine"},
           "seeds": args.seeds, "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])}
    if neuralop_available():
        import neuralop

        out["neuraloperator"] = getattr(neuralop, "__version__", "unknown")
    runs = {m: [] for m in args.models if m not in skipped}
    example = []
    for seed in args.seeds:
        args.seed = seed
        with tempfile.TemporaryDirectory() as tmp:
            store = import_store(data, Path(tmp))
            for name in runs:  # interleaved per seed, so that a change of machine load falls on every model
                r = run_kryflow(store, Path(tmp), name, kwargs[name], args)
                runs[name].append(r)
                print(f"seed {seed}: {name} ({r['parameters']} params) test rel L2 16x16 {r['test_rel_l2_16']:.4f}, "
                      f"32x32 {r['test_rel_l2_32']:.4f}, {1e3 * r['seconds_per_step']:.1f} ms/step", flush=True)
        if args.example and neuralop_available():
            example.append(run_neuraloperator(data, args))
            n = example[-1]
            print(f"seed {seed}: neuraloperator example ({n['parameters']} params) test rel L2 16x16 "
                  f"{n['test_rel_l2_16']:.4f}, 32x32 {n['test_rel_l2_32']:.4f}", flush=True)
    out["models"] = {}
    for name, rs in runs.items():
        out["models"][name] = {
            "parameters": rs[0]["parameters"], "runs": rs,
            **{f"mean_test_rel_l2_{r}": sum(x[f"test_rel_l2_{r}"] for x in rs) / len(rs) for r in (16, 32)},
            "mean_seconds_per_step": sum(x["seconds_per_step"] for x in rs) / len(rs)}
    for name, why in skipped.items():
        out["models"][name] = {"skipped": why}
        print(f"{name} skipped: {why}")
    if example:
        out["neuraloperator_example"] = {
            "runs": example, **{f"mean_test_rel_l2_{r}": sum(x[f"test_rel_l2_{r}"] for x in example) / len(example)
                                for r in (16, 32)}}
    elif args.example:
        out["neuraloperator_example"] = {"skipped": absent}
    print("mean over seeds, test rel L2 16x16 / ms per step: " + ", ".join(
        f"{n} {v['mean_test_rel_l2_16']:.4f} / {1e3 * v['mean_seconds_per_step']:.1f}"
        for n, v in out["models"].items() if "runs" in v))
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
