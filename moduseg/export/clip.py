"""``moduseg export clip``: open_clip ViT -> dense image ONNX + text ONNX.

The pseudo-mask generator (``moduseg.bank.pseudo``) needs per-patch CLIP
features, which a stock CLIP image tower does not give: its last block mixes
every patch with the class token. Training-free open-vocabulary segmenters
(SCLIP, ClearCLIP, CorrCLIP) fix that at inference time by replacing the
last block's attention with self-self attention (softmax(q q^T) +
softmax(k k^T)) and dropping that block's residual and FFN. That change is
made here, in the torch wrapper, so the exported ONNX already outputs the
dense features and the runtime needs neither torch nor open_clip for images.

Outputs (in ``--out``): ``image.onnx`` (float32 RGB 0..255 ``[B,3,S,S]`` ->
L2-normalised patch embeddings ``[B,E,S/p,S/p]``), ``text.onnx`` (int64 token
ids ``[N,L]`` -> L2-normalised text embeddings ``[N,E]``) and ``clip.json``
(sizes, logit scale, tokenizer, attention variant and file checksums).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from ..io import sha256_file
from ..owned import atomic_path
from ..errors import InputError, ModelNotFoundError

ATTENTION_MODES = ("qq+kk", "qq", "kk", "vanilla")
META_NAME = "clip.json"
IMAGE_NAME = "image.onnx"
TEXT_NAME = "text.onnx"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class DenseClipOptions:
    """How the last image block is changed for dense inference.

    ``qq+kk`` with no residual and no FFN is the SCLIP/ClearCLIP/CorrCLIP
    style default; ``vanilla`` with both kept reproduces the stock block
    (useful to check the wrapper against open_clip itself).
    """

    crop: int | None = None  # network input side; None = the model's own size
    attention: str = "qq+kk"
    residual: bool = False
    ffn: bool = False

    def validate(self) -> None:
        if self.attention not in ATTENTION_MODES:
            raise InputError(
                f"attention must be one of {list(ATTENTION_MODES)}, got {self.attention!r}")
        if self.crop is not None and self.crop <= 0:
            raise InputError(f"crop must be a positive number of pixels, got {self.crop}")


def _torch():
    try:
        import torch
        return torch
    except ImportError:  # pragma: no cover - exercised only without torch
        raise InputError("exporting CLIP needs torch and open_clip_torch: "
                         "pip install 'moduseg[clip]'") from None


def _build_wrappers():
    """Define the torch modules lazily so importing this file needs no torch."""
    torch = _torch()
    import torch.nn.functional as F
    from torch import nn

    class DenseClipImage(nn.Module):
        """open_clip ``VisionTransformer`` -> normalised dense patch embeddings."""

        def __init__(self, visual, options: DenseClipOptions, mean, std):
            super().__init__()
            if not all(hasattr(visual, a) for a in ("conv1", "transformer", "ln_post")):
                raise InputError(
                    f"{type(visual).__name__} is not an open_clip VisionTransformer (timm "
                    f"and ResNet towers are not supported); use a ViT CLIP such as ViT-B-16")
            self.visual = visual
            self.options = options
            ph, pw = _pair(visual.patch_size)
            if ph != pw:
                raise InputError(f"only square patches are supported, got {visual.patch_size}")
            self.patch = ph
            native = _pair(visual.image_size)
            self.crop = int(options.crop or native[0])
            if self.crop % self.patch:
                raise InputError(
                    f"crop {self.crop} is not a multiple of the patch size {self.patch}; "
                    f"pick e.g. {self.crop // self.patch * self.patch}")
            self.grid = self.crop // self.patch
            if getattr(visual, "attn_pool", None) is not None:
                raise InputError("CLIP models with attentional pooling are not supported "
                                 "for dense inference; use a plain ViT CLIP (e.g. ViT-B-16)")
            blk = visual.transformer.resblocks[-1]
            if not isinstance(getattr(blk, "attn", None), nn.MultiheadAttention):
                raise InputError(
                    "the last image block has no standard multi-head attention "
                    "(custom/qk-norm blocks are not supported); use a plain ViT CLIP")
            self.batch_first = bool(getattr(visual.transformer, "batch_first", True))
            pos = visual.positional_embedding.detach()
            gh, gw = visual.grid_size
            grid_pos = pos[1:].reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
            if (gh, gw) != (self.grid, self.grid):
                grid_pos = F.interpolate(grid_pos, size=(self.grid, self.grid),
                                         mode="bicubic", align_corners=False)
            grid_pos = grid_pos.permute(0, 2, 3, 1).reshape(self.grid * self.grid, -1)
            self.register_buffer("pos", torch.cat([pos[:1], grid_pos], 0))
            m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
            s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
            self.register_buffer("mean", m)
            self.register_buffer("std", s)

        def forward(self, pixels):
            v = self.visual
            x = (pixels - self.mean) / self.std
            x = v.conv1(x)
            B, C, h, w = x.shape
            x = x.reshape(B, C, h * w).permute(0, 2, 1)
            cls = v.class_embedding.view(1, 1, -1).expand(B, -1, -1).to(x.dtype)
            x = torch.cat([cls, x], 1) + self.pos.to(x.dtype)
            x = v.ln_pre(x)
            if not self.batch_first:
                x = x.transpose(0, 1)
            for blk in v.transformer.resblocks[:-1]:
                x = blk(x)
            if not self.batch_first:
                x = x.transpose(0, 1)
            x = self._last_block(v.transformer.resblocks[-1], x)
            x = v.ln_post(x[:, 1:])
            if v.proj is not None:
                x = x @ v.proj
            x = F.normalize(x, dim=-1)
            return x.permute(0, 2, 1).reshape(B, x.shape[-1], h, w)

        def _last_block(self, blk, x):
            o = self.options
            attn = blk.attn
            y = blk.ln_1(x)
            B, N, W = y.shape
            heads = attn.num_heads
            hd = W // heads
            qkv = F.linear(y, attn.in_proj_weight, attn.in_proj_bias)
            q, k, val = (t.reshape(B, N, heads, hd).transpose(1, 2) for t in qkv.chunk(3, -1))
            scale = hd ** -0.5
            if o.attention == "vanilla":
                a = torch.softmax(q @ k.transpose(-1, -2) * scale, -1)
            else:
                a = 0
                if "qq" in o.attention:
                    a = a + torch.softmax(q @ q.transpose(-1, -2) * scale, -1)
                if "kk" in o.attention:
                    a = a + torch.softmax(k @ k.transpose(-1, -2) * scale, -1)
            out = (a @ val).transpose(1, 2).reshape(B, N, W)
            out = blk.ls_1(attn.out_proj(out))
            x = x + out if o.residual else out
            if o.ffn:
                x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))
            return x

    class ClipText(nn.Module):
        """open_clip text tower -> normalised text embeddings."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, tokens):
            return F.normalize(self.model.encode_text(tokens), dim=-1)

    return DenseClipImage, ClipText


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))




def _mean_std(model):
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    cfg = getattr(model.visual, "preprocess_cfg", None) or {}
    mean = tuple(float(x) for x in cfg.get("mean", OPENAI_DATASET_MEAN))
    std = tuple(float(x) for x in cfg.get("std", OPENAI_DATASET_STD))
    return mean, std


def dense_image_module(model, options: DenseClipOptions = DenseClipOptions()):
    """The torch module that ``image.onnx`` is exported from (also for parity tests)."""
    options.validate()
    DenseClipImage, _ = _build_wrappers()
    mean, std = _mean_std(model)
    return DenseClipImage(model.visual, options, mean, std).eval()


def text_module(model):
    _, ClipText = _build_wrappers()
    return ClipText(model).eval()


def _text_tokenizer_info(model) -> dict:
    """Only the CLIP BPE tokenizer shipped inside open_clip is supported at runtime."""
    text = getattr(model, "transformer", None)
    if text is None or not hasattr(model, "token_embedding"):
        raise InputError("this CLIP model has no built-in text tower (HF text towers need "
                         "their own tokenizer); use an OpenAI-style CLIP such as ViT-B-16")
    vocab = int(model.token_embedding.num_embeddings)
    if vocab != 49408:
        raise InputError(f"text tower vocabulary is {vocab}, not the CLIP BPE size 49408; "
                         f"this tokenizer is not supported")
    return {"kind": "clip-bpe", "context_length": int(model.context_length)}


def _export_onnx(torch, module, args, path: Path, input_names, output_names,
                 dynamic_axes, opset: int) -> None:
    fast = torch.backends.mha.get_fastpath_enabled()
    # the fused MHA kernel has no ONNX symbolic; the plain path exports as MatMul/Softmax
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with atomic_path(path, suffix=".onnx") as tmp, torch.no_grad(), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer chatter about shapes and indexing
            torch.onnx.export(module, args, str(tmp), input_names=input_names,
                              output_names=output_names, dynamic_axes=dynamic_axes,
                              opset_version=opset, dynamo=False, do_constant_folding=True)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


@dataclass
class ClipExport:
    """What ``export_clip_model`` wrote (also the content of ``clip.json``)."""

    format_version: int
    model: str
    pretrained: str
    crop: int
    patch: int
    embed_dim: int
    logit_scale: float
    mean: tuple
    std: tuple
    tokenizer: dict
    attention: str
    residual: bool
    ffn: bool
    activation: str
    image_onnx: str
    text_onnx: str
    image_sha256: str
    text_sha256: str

    def to_dict(self) -> dict:
        return asdict(self)


def export_clip_model(model, out_dir: str | Path, options: DenseClipOptions = DenseClipOptions(),
                      model_name: str = "custom", pretrained: str = "none",
                      opset: int = 17) -> ClipExport:
    """Write ``image.onnx``, ``text.onnx`` and ``clip.json`` for an open_clip CLIP."""
    torch = _torch()
    out = Path(out_dir)
    model = model.eval().float()
    tok = _text_tokenizer_info(model)
    image = dense_image_module(model, options)
    text = text_module(model)
    crop = image.crop
    _export_onnx(torch, image, (torch.zeros(1, 3, crop, crop),), out / IMAGE_NAME,
                        ["pixels"], ["features"], {"pixels": {0: "batch"},
                                                   "features": {0: "batch"}}, opset)
    tokens = torch.zeros(2, tok["context_length"], dtype=torch.long)
    tokens[:, 0], tokens[:, 1] = 49406, 49407  # start, end: argmax pooling finds the end
    _export_onnx(torch, text, (tokens,), out / TEXT_NAME, ["tokens"], ["embeddings"],
                        {"tokens": {0: "n"}, "embeddings": {0: "n"}}, opset)
    mean, std = _mean_std(model)
    meta = ClipExport(
        format_version=FORMAT_VERSION, model=model_name, pretrained=pretrained, crop=crop,
        patch=image.patch, embed_dim=int(text(tokens[:1]).shape[-1]),
        logit_scale=float(model.logit_scale.exp().item()), mean=mean, std=std,
        tokenizer=tok, attention=image.options.attention, residual=image.options.residual,
        ffn=image.options.ffn,
        activation=type(model.visual.transformer.resblocks[0].mlp.gelu).__name__,
        image_onnx=IMAGE_NAME, text_onnx=TEXT_NAME,
        image_sha256=sha256_file(out / IMAGE_NAME), text_sha256=sha256_file(out / TEXT_NAME))
    _write_json(out / META_NAME, meta.to_dict())
    return meta


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


def load_open_clip(model_name: str, pretrained: str | None, model_config: str | None = None,
                   quick_gelu: bool = False):
    """Build the open_clip model; ``pretrained`` is a tag or a checkpoint path.

    OpenAI-trained weights expect QuickGELU; for a known tag that needs it
    this is switched on automatically, for a checkpoint file pass
    ``quick_gelu=True`` (or use a ``*-quickgelu`` model name).
    """
    try:
        import open_clip
    except ImportError:
        raise InputError("exporting CLIP needs open_clip_torch: pip install 'moduseg[clip]'") \
            from None
    if model_config:
        cfg_path = Path(model_config)
        if not cfg_path.is_file():
            raise ModelNotFoundError(f"--model-config {cfg_path} does not exist")
        open_clip.add_model_config(cfg_path)
        model_name = cfg_path.stem
    if model_name not in open_clip.list_models():
        raise InputError(f"unknown open_clip model {model_name!r}; see open_clip.list_models() "
                         f"or pass --model-config with a model config JSON")
    weights = None if pretrained in (None, "none") else pretrained
    if weights:
        tag_cfg = open_clip.get_pretrained_cfg(model_name, weights)
        if tag_cfg:
            quick_gelu = quick_gelu or bool(tag_cfg.get("quick_gelu", False))
        elif not Path(weights).is_file():
            raise ModelNotFoundError(
                f"--pretrained {weights!r} is neither a checkpoint file nor a known tag of "
                f"{model_name} (tags: {open_clip.list_pretrained_tags_by_model(model_name)})")
    try:
        return open_clip.create_model(model_name, pretrained=weights, device="cpu",
                                      force_quick_gelu=quick_gelu)
    except RuntimeError as e:
        raise ModelNotFoundError(
            f"could not load CLIP weights {pretrained!r} for {model_name}: {e}. Without "
            f"internet, download the checkpoint elsewhere and pass its path to --pretrained") \
            from None


@click.command("clip")
@click.option("--model", "model_name", default="ViT-B-16", show_default=True,
              help="open_clip model name.")
@click.option("--pretrained", default=None,
              help="open_clip pretrained tag (e.g. openai) or a checkpoint file path; "
                   "'none' = random weights (tests only).")
@click.option("--model-config", type=click.Path(dir_okay=False), default=None,
              help="A custom open_clip model config JSON (its file stem becomes the name).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Directory for image.onnx, text.onnx and clip.json.")
@click.option("--crop", type=int, default=336, show_default=True,
              help="Sliding-window crop side the image ONNX is built for (0 = model size).")
@click.option("--attention", type=click.Choice(ATTENTION_MODES), default="qq+kk",
              show_default=True, help="Last-block attention for dense features.")
@click.option("--residual/--no-residual", default=False, show_default=True,
              help="Keep the last block's attention residual.")
@click.option("--ffn/--no-ffn", default=False, show_default=True,
              help="Keep the last block's FFN.")
@click.option("--quick-gelu", is_flag=True,
              help="Force QuickGELU (OpenAI weights from a checkpoint file need it; known "
                   "tags set it themselves).")
@click.option("--opset", type=int, default=17, show_default=True)
def export_clip(model_name, pretrained, model_config, out_dir, crop, attention, residual, ffn,
                quick_gelu, opset):
    """Export an open_clip CLIP as a dense image ONNX and a text ONNX."""
    if pretrained is None:
        raise click.UsageError("--pretrained is required (a tag such as 'openai', a checkpoint "
                               "path, or 'none' for random weights)")
    model = load_open_clip(model_name, pretrained, model_config, quick_gelu)
    if model_config:
        model_name = Path(model_config).stem
    meta = export_clip_model(model, out_dir, DenseClipOptions(crop=crop or None,
                                                              attention=attention,
                                                              residual=residual, ffn=ffn),
                             model_name=model_name, pretrained=str(pretrained), opset=opset)
    click.echo(f"wrote {Path(out_dir) / IMAGE_NAME} (crop {meta.crop}, patch {meta.patch}, "
               f"dim {meta.embed_dim}), {Path(out_dir) / TEXT_NAME} and "
               f"{Path(out_dir) / META_NAME}")
