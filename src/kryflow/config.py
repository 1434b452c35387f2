"""Workflow configuration: loading, schema validation and checks against the registries.

The JSON Schema (``workflow/schemas/config.schema.yaml``) checks structure and types; the
checks here look names up in the registries (PDE families, solvers, models, optimizers) and
check what depends on several keys (a grid size the model needs, a dataset name that would
collide with a generated one). Every error names the config key and says how to fix it, and
all of it runs before any job starts (the Snakefile calls :func:`check_config` at parse time).
"""

from __future__ import annotations

import copy
import itertools
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "SCHEMA_PATH",
    "load_config",
    "validate_config",
    "check_config",
    "training_cells",
    "transfer_name",
    "dataset_names",
    "read_yaml",
]

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config value is invalid; the message names the key and the fix."""


def _schema() -> dict:
    path = SCHEMA_PATH
    if not path.exists():  # installed without the workflow folder: use the packaged copy
        path = Path(__file__).with_name("config.schema.yaml")
    with open(path) as fh:
        return yaml.safe_load(fh)


def _fill_defaults(instance: Any, schema: Mapping, root: Mapping) -> None:
    """Fill ``default`` values from the schema (what snakemake.utils.validate does)."""
    if "$ref" in schema:
        ref = schema["$ref"].split("/")[-1]
        schema = root["$defs"][ref]
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if "$ref" in sub:
            sub_resolved = root["$defs"][sub["$ref"].split("/")[-1]]
        else:
            sub_resolved = sub
        if key not in instance and "default" in sub_resolved:
            instance[key] = copy.deepcopy(sub_resolved["default"])
        if key in instance:
            _fill_defaults(instance[key], sub_resolved, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in schema.get("properties", {}):
                _fill_defaults(value, extra, root)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def validate_config(config: dict) -> dict:
    """Check ``config`` against the schema and fill defaults, in place; returns it."""
    import jsonschema

    schema = _schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors[:10]:
            msg = err.message
            if err.validator == "additionalProperties":
                msg += " (misspelt key? see config/README.md for the accepted keys)"
            lines.append(f"config key '{_key(err.absolute_path)}': {msg}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    _fill_defaults(config, schema, schema)
    return config


def transfer_name(dataset: str, n: int) -> str:
    """Name of the finer-grid dataset generated for resolution transfer."""
    return f"{dataset}__n{n}"


def dataset_names(config: Mapping) -> list[str]:
    """Every dataset the workflow makes: the configured ones and their transfer sets."""
    names = list(config["datasets"])
    for name, ds in config["datasets"].items():
        if "source" in ds:
            names.append(f"{name}__hi")
        elif ds.get("transfer"):
            names.append(transfer_name(name, ds["transfer"]["n"]))
    return names


def training_cells(config: Mapping) -> list[tuple[str, str, str, int]]:
    """The grid: (dataset, model, optimizer, seed) for every combination."""
    return [
        (d, m, o, int(s))
        for d, m, o, s in itertools.product(
            config["datasets"], config["models"], config["optimizers"], config["seeds"]
        )
    ]


def _check_names(section: str, names, registry, what: str) -> None:
    for key, entry in names.items():
        registered = entry.get("name", key) if isinstance(entry, Mapping) else key
        if registered not in registry:
            raise ConfigError(
                f"config key '{section}.{key}': unknown {what} '{registered}'. "
                f"Valid: {', '.join(sorted(registry))}. (A section key may be any label if the "
                f"entry sets name: <registered {what}>.)"
            )


def _check_family(key: str, family: str, ds: Mapping) -> None:
    """Build the family once (cheap: no sampling) so its own parameter checks run now."""
    from kryflow.pdes import build_family

    user = dict(ds.get("params") or {})
    sizes = [user.get("n")] + ([ds["transfer"]["n"]] if ds.get("transfer") else [])
    for n in sizes:
        params = dict(user) if n is None else {**user, "n": n}
        try:
            build_family(family, **params)
        except (ValueError, TypeError) as exc:
            text = str(exc)
            named = next((p for p in sorted(params, key=len, reverse=True)
                          if text.startswith(p) or f"'{p}'" in text or f" {p} " in text), None)
            sub = f"{key}.params.{named}" if named else f"{key}.params"
            raise ConfigError(f"config key '{sub}': {text}") from None


def check_config(config: dict) -> dict:
    """Schema validation plus the registry and cross-key checks. Returns the config."""
    validate_config(config)
    from kryflow.models import MODELS, model_parameters, resolution_divisor
    from kryflow.optim import OPTIMIZERS, check_hyperparameters
    from kryflow.pdes import PDE_FAMILIES, family_parameters
    from kryflow.solvers import PRECONDITIONERS, SOLVER_METHODS

    generated = set(config["datasets"])
    for name, ds in config["datasets"].items():
        key = f"datasets.{name}"
        if ".." in name or "/" in name or os.sep in name:
            raise ConfigError(f"config key '{key}': dataset names may not contain '/' or '..'")
        if "source" in ds:
            for f in ("train", "test", "test_hi"):
                if f in ds["source"] and not Path(ds["source"][f]).expanduser().exists():
                    raise ConfigError(
                        f"config key '{key}.source.{f}': file {ds['source'][f]} does not exist; "
                        "give the path to the external data"
                    )
            continue
        family = ds["family"]
        if family not in PDE_FAMILIES:
            raise ConfigError(
                f"config key '{key}.family': unknown PDE family '{family}'. "
                f"Valid: {', '.join(sorted(PDE_FAMILIES))}"
            )
        accepted = family_parameters(family)
        for p, v in (ds.get("params") or {}).items():
            if p not in accepted:
                raise ConfigError(
                    f"config key '{key}.params.{p}': not a parameter of '{family}'. "
                    f"Accepted: {', '.join(sorted(accepted))}"
                )
        params = {**accepted, **(ds.get("params") or {})}
        _check_family(key, family, ds)
        n, dim = params.get("n"), params.get("dim")
        if not isinstance(n, int) or n < 4:
            raise ConfigError(f"config key '{key}.params.n': grid size must be an integer >= 4, got {n!r}")
        if dim not in (2, 3):
            raise ConfigError(f"config key '{key}.params.dim': must be 2 or 3, got {dim!r}")
        fr = ds.get("splits", [0.75, 0.125, 0.125])
        if abs(sum(fr) - 1.0) > 1e-6 or min(fr) <= 0:
            raise ConfigError(
                f"config key '{key}.splits': train/val/test fractions must be > 0 and sum to 1, got {fr}"
            )
        block = int(ds.get("split_block", 1))
        units = -(-ds["num_samples"] // block)
        if block > 1 and units < 3 or block == 1 and min(fr) * units < 1:
            if block > 1:
                raise ConfigError(
                    f"config key '{key}.split_block': {ds['num_samples']} samples in blocks of {block} "
                    f"give {units} blocks, too few for fractions {fr} (a split would be empty); "
                    "lower split_block or raise num_samples"
                )
            raise ConfigError(
                f"config key '{key}.num_samples': {ds['num_samples']} samples leave an empty split "
                f"with fractions {fr}; raise num_samples"
            )
        solver = ds.get("solver") or {}
        if solver.get("method", "auto") not in ("auto", *SOLVER_METHODS):
            raise ConfigError(
                f"config key '{key}.solver.method': unknown solver '{solver['method']}'. "
                f"Valid: auto, {', '.join(SOLVER_METHODS)}"
            )
        if solver.get("preconditioner", "none") not in PRECONDITIONERS:
            raise ConfigError(
                f"config key '{key}.solver.preconditioner': unknown preconditioner "
                f"'{solver['preconditioner']}'. Valid: {', '.join(PRECONDITIONERS)}"
            )
        if "recycle_mode" in solver and solver.get("method", "auto") != "rcg":
            raise ConfigError(
                f"config key '{key}.solver.recycle_mode': only method 'rcg' recycles this way (method is "
                f"'{solver.get('method', 'auto')}'); set method: rcg or remove recycle_mode"
            )
        if ds.get("transfer"):
            tn = ds["transfer"]["n"]
            if tn <= n:
                raise ConfigError(
                    f"config key '{key}.transfer.n': transfer grid {tn} must be finer than n={n}"
                )
            if transfer_name(name, tn) in generated:
                raise ConfigError(f"config key '{key}.transfer': name collides with dataset "
                                  f"'{transfer_name(name, tn)}'")

    _check_names("models", config["models"], MODELS, "model")
    for key, kwargs in config["models"].items():
        mname = kwargs.get("name", key)
        accepted = model_parameters(mname)
        for p in kwargs:
            if p != "name" and p not in accepted:
                raise ConfigError(
                    f"config key 'models.{key}.{p}': not a parameter of model '{mname}'. "
                    f"Accepted: {', '.join(sorted(accepted))}"
                )
        for p, v in kwargs.items():
            if p == "name":
                continue
            default = accepted[p]
            if isinstance(default, bool):
                ok = isinstance(v, bool)
            elif isinstance(default, int):
                ok = isinstance(v, int) and not isinstance(v, bool)
            elif isinstance(default, float):
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            elif isinstance(default, (list, tuple)):
                ok = isinstance(v, (list, tuple))
            else:
                ok = True
            if not ok:
                raise ConfigError(f"config key 'models.{key}.{p}': expected {type(default).__name__} "
                                  f"like the default {default!r}, got {v!r}")
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0:
                raise ConfigError(f"config key 'models.{key}.{p}': must be positive, got {v}")
        model_kw = {k: v for k, v in kwargs.items() if k != "name"}
        div = resolution_divisor(mname, **model_kw)
        for dname, ds in config["datasets"].items():
            if "source" in ds:
                continue
            params = {**family_parameters(ds["family"]), **(ds.get("params") or {})}
            sizes = [params["n"]] + ([ds["transfer"]["n"]] if ds.get("transfer") else [])
            for sz in sizes:
                if sz % div:
                    raise ConfigError(
                        f"config key 'models.{key}': model '{mname}' needs grid sizes divisible "
                        f"by {div}, but dataset '{dname}' uses n={sz}; change the dataset's n "
                        "(or transfer.n) or the model's depth"
                    )

    _check_names("optimizers", config["optimizers"], OPTIMIZERS, "optimizer")
    for key, hp in config["optimizers"].items():
        oname = hp.get("name", key)
        lr = hp.get("lr")
        if lr is None:
            raise ConfigError(f"config key 'optimizers.{key}.lr': a learning rate is required")
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
            raise ConfigError(f"config key 'optimizers.{key}.lr': must be a positive number, got {lr!r}")
        wd = hp.get("weight_decay", 0.0)
        if not isinstance(wd, (int, float)) or wd < 0:
            raise ConfigError(
                f"config key 'optimizers.{key}.weight_decay': must be >= 0, got {wd!r}"
            )
        allowed = set(OPTIMIZERS[oname].defaults) | {"lr", "weight_decay", "name"}
        for p in hp:
            if p not in allowed:
                raise ConfigError(
                    f"config key 'optimizers.{key}.{p}': not a hyperparameter of '{oname}'. "
                    f"Accepted: {', '.join(sorted(allowed - {'name'}))}"
                )
        extras = {p: v for p, v in hp.items() if p not in ("name", "lr", "weight_decay")}
        try:
            check_hyperparameters(oname, lr, wd, **extras)
        except (ValueError, TypeError) as exc:
            text = str(exc)
            named = next((p for p in ("lr", "weight_decay", *extras) if f"'{p}'" in text
                          or text.startswith(p) or f"{p}=" in text), None)
            sub = f"optimizers.{key}.{named}" if named else f"optimizers.{key}"
            raise ConfigError(f"config key '{sub}': {text}") from None
    return config


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (plain YAML keeps the last one silently)."""


def _no_duplicates(loader: _StrictLoader, node, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(
                f"key '{key}' appears twice in one mapping (line {key_node.start_mark.line + 1}); "
                "YAML would keep only the last one: rename or merge them"
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def read_yaml(path: str | os.PathLike) -> dict:
    """Read one config file strictly: syntax errors and duplicate keys name the file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        with open(path) as fh:
            data = yaml.load(fh, Loader=_StrictLoader) or {}  # noqa: S506 (a SafeLoader subclass)
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def load_config(path: str | os.PathLike, overrides: Mapping | None = None) -> dict:
    """Read a YAML config, apply overrides, validate and check it."""
    config = read_yaml(path)
    if overrides:
        config = _merge(config, overrides)
    return check_config(config)


def _merge(base: dict, over: Mapping) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out
