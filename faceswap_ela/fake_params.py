"""The ``fakes`` section of params.yaml (the forgers' parameters), the held-out swap settings of
``testsets.unseen_swap``, and the strict base every section of faceswap_ela.params shares.

A swap varies in every step (``SwapAxes``): each list is a choice and each [low, high] a uniform
range, drawn per rendering. ``fakes.swap`` is the training family; ``testsets.unseen_swap``
(``HeldOutSwap``) names values for some axes that no training recipe uses, the others stay the
family's.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _lists_as_tuples(cls, data: object) -> object:
        # YAML has lists, not tuples; strict mode takes only tuples for tuple fields
        if isinstance(data, dict):
            return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return data


Share = Annotated[float, Field(ge=0, le=1)]
Zoom = Annotated[float, Field(gt=0, le=2)]
Downscale = Annotated[float, Field(ge=1, le=16)]
Grow = Annotated[float, Field(ge=-0.5, le=0.5)]
Quality = Annotated[int, Field(ge=1, le=100)]
DonorScale = Annotated[float, Field(ge=0.25, le=4)]
Hull = Literal["all", "inner"]  # the convex hull of landmarks 0-67, or of 17-67 (inside the ROI)
Color = Literal["none", "reinhard", "histogram", "lowfreq"]
Align = Literal["inner", "all", "affine"]
Interpolation = Literal["nearest", "linear", "cubic", "area"]
SwapMask = Literal["inner", "all", "subset"]


def ordered(v: tuple | None) -> tuple | None:
    if isinstance(v, tuple) and len(v) == 2 and v[0] > v[1]:
        raise ValueError("must be [low, high] with low <= high")
    return v


def unique(v: tuple | None) -> tuple | None:
    if v is not None and not v:
        raise ValueError("must list at least one value")
    if v is not None and len(set(v)) != len(v):
        raise ValueError("values must not repeat")
    return v


class BlendParams(Section):
    """A self-blended fake (Shiohara & Yamasaki's SBI); sizes are shares of the face size."""

    hull: Hull = "inner"
    shift: float = Field(0.03, ge=0, le=0.5)
    scale: tuple[Zoom, Zoom] = (0.95, 1.05)
    rgb_shift: float = Field(20.0, ge=0, le=255)
    hue_shift: float = Field(5.0, ge=0, le=180)
    saturation: Share = 0.2
    brightness: Share = 0.1
    contrast: Share = 0.1
    sharpen_p: Share = 0.5
    sharpen: tuple[Share, Share] = (0.2, 0.5)
    downscale: tuple[Downscale, Downscale] = (2.0, 4.0)
    elastic: float = Field(0.03, ge=0, le=0.5)
    grow: tuple[Grow, Grow] = (-0.05, 0.05)
    blur: tuple[Share, Share] = (0.02, 0.12)
    full_blend: Share = 0.5
    ratio: tuple[Share, Share] = (0.25, 0.75)

    @field_validator("scale", "sharpen", "downscale", "grow", "blur", "ratio")
    @classmethod
    def _range(cls, v: tuple) -> tuple:
        return ordered(v)


AXES = ("color", "align", "interpolation", "mask", "erosion", "scale", "save")
CHOICES = ("color", "align", "interpolation", "mask")  # lists; the other axes are ranges


class SwapAxes(Section):
    """What varies from one swap to the next (the defaults: the training family). ``scale``: the
    donor's face resized to this times the head's before the warp ([]: as it is); ``save``: the
    rendered photo's JPEG quality, ``head`` (the head photo's own) or drawn from [low, high]."""

    color: tuple[Color, ...] | None = ("none", "reinhard")
    align: tuple[Align, ...] | None = ("inner", "all")
    interpolation: tuple[Interpolation, ...] | None = ("linear", "area")
    mask: tuple[SwapMask, ...] | None = ("inner", "all")
    erosion: tuple[Share, Share] | None = (0.0, 0.05)
    scale: tuple[DonorScale, ...] | None = (0.8, 1.25)
    save: Literal["head"] | tuple[Quality, Quality] | None = (75, 100)

    @field_validator(*CHOICES)
    @classmethod
    def _choices(cls, v: tuple | None) -> tuple | None:
        return unique(v)

    @field_validator("erosion", "save")
    @classmethod
    def _range(cls, v: tuple | None) -> tuple | None:
        return ordered(v)

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: tuple | None) -> tuple | None:
        if v is not None and len(v) not in (0, 2):
            raise ValueError("must be [] (the donor as it is) or [low, high]")
        return ordered(v)


class SwapParams(SwapAxes):
    """An identity swap: another photo's face aligned, colour-matched and pasted inside the head's
    ``hull``, every step drawn from its axes."""

    hull: Hull = "all"
    intersect: bool = True
    feather: tuple[Share, Share] = (0.03, 0.1)
    donors: int = Field(16, ge=1)  # drawn among this many photos of the closest face shape
    lowfreq_blur: float = Field(0.1, gt=0, le=1)  # color lowfreq: the Gaussian's sigma

    @field_validator(*AXES)
    @classmethod
    def _given(cls, v: object) -> object:
        if v is None:
            raise ValueError("the training family needs a value on every axis")
        return v

    @field_validator("feather")
    @classmethod
    def _feather(cls, v: tuple) -> tuple:
        return ordered(v)


def _overlap(axis: str, family: object, held: object) -> str | None:
    """Why a held-out axis is not disjoint from the family's, or None when it is."""
    if axis in CHOICES:
        shared = [v for v in held if v in family]
        return f"shares {', '.join(shared)} with the training family" if shared else None
    if axis == "save" and "head" in (family, held):
        return "can't be held out with save: head on either side (the head photo's quality is any)"
    if axis == "scale" and not (family and held):
        return "can't be held out with scale [] on either side (a donor as it is has any size)"
    if held[0] <= family[1] and family[0] <= held[1]:
        return f"{list(held)} overlaps the training family's {list(family)}"
    return None


class HeldOutSwap(SwapAxes):
    """Swap settings no training recipe uses: the axes given here replace the family's and must be
    disjoint from them (a list sharing no value, a range not overlapping); an axis left out or null
    stays the family's."""

    @model_validator(mode="before")
    @classmethod
    def _unset_is_shared(cls, data: object) -> object:
        if isinstance(data, dict):
            return dict.fromkeys(AXES) | data
        return data

    @model_validator(mode="after")
    def _some_held_out(self) -> HeldOutSwap:
        if not self.held_out():
            raise ValueError(f"must hold out at least one of {', '.join(AXES)}")
        return self

    def held_out(self) -> dict[str, object]:
        """The axes held out, with their values."""
        return {axis: getattr(self, axis) for axis in AXES if getattr(self, axis) is not None}

    def overlaps(self, family: SwapParams) -> dict[str, str]:
        """Each held-out axis that is not disjoint from ``family``'s, with why."""
        found = {axis: _overlap(axis, getattr(family, axis), held) for axis, held in self.held_out().items()}
        return {axis: why for axis, why in found.items() if why is not None}

    def over(self, family: SwapParams) -> SwapParams:
        """The family's parameters with the held-out axes replaced."""
        return family.model_copy(update=self.held_out())


class FakeParams(Section):
    fraction: float = Field(0.5, gt=0, lt=1)  # with materialize.variants: see Params._both_classes
    scales: tuple[int, int] = (64, 127)
    blur_kernel: int = Field(5, ge=1, le=63)
    mask: Literal["square", "hull", "random"] = "random"
    feather: int = Field(0, ge=0, le=64)
    jpeg: tuple[int, ...] = ()  # [] or [low, high]

    @field_validator("jpeg")
    @classmethod
    def _jpeg(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if v and (len(v) != 2 or not 1 <= v[0] <= v[1] <= 100):
            raise ValueError("must be [] (off) or [low, high] with 1 <= low <= high <= 100")
        return v

    blend: BlendParams = BlendParams()
    swap: SwapParams = SwapParams()

    @field_validator("scales")
    @classmethod
    def _scales(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 8 <= v[0] <= v[1] <= 1024:
            raise ValueError("must be [low, high] with 8 <= low <= high <= 1024")
        return v

    @field_validator("blur_kernel")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("must be odd")
        return v


# the held-out swap test's default settings (testsets.unseen_swap): six axes held out, erosion shared
UNSEEN_SWAP = HeldOutSwap(
    color=("histogram", "lowfreq"),
    align=("affine",),
    interpolation=("cubic", "nearest"),
    mask=("subset",),
    scale=(1.3, 1.6),
    save=(50, 70),
)
