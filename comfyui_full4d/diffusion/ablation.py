"""Paper Tab. 4 ablation switches: what the fused attention, the projection conditioning and the SPEC 2
mask rules do when turned off. They live beside what they switch (``attention``, ``adapter``); the
trainer and the host patch both read them."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Ablation"]


@dataclass(frozen=True)
class Ablation:
    """Paper Tab. 4 switches; all on is the full model.

    fused_attention: the fused time-view branch (off: no cross-view attention, camera encoders
    only); projection: projection conditioning (off: target condition halves are zero latents in
    model space); intra_time / cross_half: rules 2 and 3 of the SPEC 2 mask.
    """

    fused_attention: bool = True
    projection: bool = True
    intra_time: bool = True
    cross_half: bool = True

    NAMES = ("full", "no_fused_attention", "no_projection", "no_intra_time", "no_cross_half")

    @classmethod
    def named(cls, name: str) -> "Ablation":
        """"full" or "no_<switch>" (one switch off)."""
        if name not in cls.NAMES:
            raise ValueError(f"ablation must be one of {cls.NAMES}, got {name!r}")
        return cls() if name == "full" else cls(**{name[3:]: False})

    @property
    def attention_changed(self) -> bool:
        return not (self.fused_attention and self.intra_time and self.cross_half)
