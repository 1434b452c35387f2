"""kryflow: recycled-Krylov PDE data, zarr datasets and neural surrogates across optimizers."""

__version__ = "0.1.0"
