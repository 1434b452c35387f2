"""kryflow's FNO against neuraloperator's own FNO example on neuraloperator's small Darcy set.

Dev-only comparison (neuraloperator is never a kryflow dependency): both models train for the
same number of epochs on the same files and are scored with the same metric, the mean relative
L2 error of the physical (de-normalised) solution on the 50 test samples at 16×16 (and, for
information, zero-shot at 32×32). Writes ``results/benchmarks/peer_darcy.json``.

* kryflow: the files go through ``kryflow.data.import_neuraloperator_darcy`` (10% of the train
  file held out for validation, as in ``config/peer_darcy.yaml``) and ``kryflow.training.train_cell``
  trains an FNO of about 100k parameters with AdamW, relative-L2 loss and a cosine schedule.
* neuraloperator (only if ``neuralop`` imports; otherwise skipped and said so in the JSON): its
  example ``examples/models/plot_FNO_darcy.py`` as published: FNO n_modes (16, 16), 32 hidden
  channels, projection ratio 2; AdamW lr 8e-3, weight decay 1e-4; cosine annealing with
  T_max 30; H1 training loss; its data pipeline (all 1000 training samples, unshuffled batches
  of 32, output normaliser fitted on the training set) and its ``Trainer``. Only the number of
  epochs is changed from the example's 20 to the common budget.

Usage, in kryflow's environment (neuraloperator half skipped when it does not import):
    python benchmarks/peer_darcy_compare.py
with neuraloperator from a separate environment (same Python and torch==2.13.0):
    python3 -m venv /tmp/vno && /tmp/vno/bin/pip install torch==2.13.0 && /tmp/vno/bin/pip install neuraloperator
    python benchmarks/peer_darcy_compare.py --neuraloperator-site /tmp/vno/lib/python3.11/site-packages
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


def run_kryflow(data: Path, work: Path, args) -> dict:
    from kryflow.data import import_neuraloperator_darcy, make_loader
    from kryflow.models import build_model
    from kryflow.training import train_cell
    from kryflow.training.surrogate import load_surrogate

    store = work / "nop_darcy16.zarr"
    import_neuraloperator_darcy(data / "darcy_train_16.pt", data / "darcy_test_16.pt", store,
                                test_hi_pt=data / "darcy_test_32.pt", val_fraction=0.1, seed=0)
    steps_per_epoch = len(make_loader(store, "train", batch_size=args.batch_size, shuffle=True, seed=args.seed))
    model_kwargs = {"width": args.width, "modes": args.modes, "layers": 4}
    params = sum(p.numel() for p in build_model("fno", in_channels=1, out_channels=1, dim=2,
                                                 **model_kwargs).parameters())
    cfg = {"batch_size": args.batch_size, "max_steps": args.epochs * steps_per_epoch, "loss": "rel_l2",
           "scheduler": {"kind": "cosine"}, "eval_every": 10**9, "checkpoint_every": 10**9, "device": "cpu"}
    t0 = time.perf_counter()
    result = train_cell(store, work / "run", model_name="fno", model_kwargs=model_kwargs, optimizer_name="adamw",
                        optimizer_kwargs={"lr": args.lr, "weight_decay": 1e-4}, seed=args.seed, train_cfg=cfg,
                        progress=False)
    seconds = time.perf_counter() - t0
    surrogate = load_surrogate(work / "run" / "model.pt").eval()
    scores = {}
    for res, path in ((16, store), (32, store.with_name(store.stem + "_32.zarr"))):
        errs = []
        with torch.no_grad():
            for x, y in make_loader(path, "test", batch_size=50, shuffle=False):
                errs.append(rel_l2(surrogate(x), y))
        scores[res] = float(torch.cat(errs).mean())
    return {"model": "kryflow fno", "model_kwargs": model_kwargs, "parameters": params, "optimizer": "adamw",
            "lr": args.lr, "weight_decay": 1e-4, "loss": "rel_l2", "schedule": "cosine to 0 over the run",
            "train_samples": sum(len(y) for _, y in make_loader(store, "train", batch_size=256, shuffle=False)),
            "epochs": args.epochs,
            "steps": result["steps"], "status": result["status"], "train_seconds": seconds,
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
            "train_seconds": seconds, "test_rel_l2_16": scores[16], "test_rel_l2_32": scores[32]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/peer-data/neuraloperator-darcy")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--modes", type=int, default=5)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-neuraloperator", action="store_true")
    parser.add_argument("--neuraloperator-site", default=None,
                        help="site-packages of a separate environment holding neuraloperator, appended to "
                             "sys.path after kryflow's (same Python and torch versions)")
    parser.add_argument("--out", default="results/benchmarks/peer_darcy.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    missing = [f for f in ("darcy_train_16.pt", "darcy_test_16.pt", "darcy_test_32.pt") if not (data / f).is_file()]
    if missing:
        print(f"error: {missing} not found under {data} (pass --data)", file=sys.stderr)
        return 2
    out = {"data": str(data.resolve()), "torch": torch.__version__, "machine": platform.processor(),
           "threads": args.threads, "metric": "mean relative L2 of the physical solution over the test samples",
           "epochs": args.epochs, "seeds": args.seeds}
    runs = {"kryflow": [], "neuraloperator": []}
    neuralop_error = None
    if args.skip_neuraloperator:
        neuralop_error = "--skip-neuraloperator"
    else:
        if args.neuraloperator_site:
            sys.path.append(args.neuraloperator_site)
        try:
            import neuralop  # noqa: F401
        except ImportError as exc:
            neuralop_error = f"neuraloperator not importable ({exc}); see the module docstring"
    for seed in args.seeds:
        args.seed = seed
        with tempfile.TemporaryDirectory() as tmp:
            runs["kryflow"].append(run_kryflow(data, Path(tmp), args))
        k = runs["kryflow"][-1]
        print(f"seed {seed}: kryflow FNO ({k['parameters']} params) test rel L2 16x16 {k['test_rel_l2_16']:.4f}, "
              f"32x32 {k['test_rel_l2_32']:.4f}", flush=True)
        if neuralop_error is None:
            runs["neuraloperator"].append(run_neuraloperator(data, args))
            n = runs["neuraloperator"][-1]
            print(f"seed {seed}: neuraloperator FNO ({n['parameters']} params) test rel L2 16x16 "
                  f"{n['test_rel_l2_16']:.4f}, 32x32 {n['test_rel_l2_32']:.4f}", flush=True)
    for name, rs in runs.items():
        if not rs:
            out[name] = {"skipped": neuralop_error}
            print(f"{name} skipped: {neuralop_error}")
            continue
        out[name] = {"runs": rs, **{f"mean_test_rel_l2_{r}": sum(x[f"test_rel_l2_{r}"] for x in rs) / len(rs)
                                    for r in (16, 32)}}
    if runs["neuraloperator"]:
        out["kryflow_no_worse_at_16"] = (out["kryflow"]["mean_test_rel_l2_16"]
                                         <= out["neuraloperator"]["mean_test_rel_l2_16"])
        print(f"mean over seeds, test rel L2 16x16: kryflow {out['kryflow']['mean_test_rel_l2_16']:.4f}, "
              f"neuraloperator {out['neuraloperator']['mean_test_rel_l2_16']:.4f}")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
