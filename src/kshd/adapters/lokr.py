"""LoKr (peft's LoKr, LyCORIS' `lokr`): a layer's delta is the Kronecker product of a small
matrix `w1` and a larger, low-rank one `w2_a @ w2_b`; saved only as the kohya/LyCORIS file
(`lokr_w1`, `lokr_w2_a` ..., `.alpha`), which diffusers has no loader for."""

from __future__ import annotations

from kshd.adapters.peft_kohya import PeftKohyaAdapter

LOKR = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")


class LokrAdapter(PeftKohyaAdapter):
    """Where both factors are full matrices (a rank at least half a factor's side), readers
    apply the product at scale 1 and ignore alpha (LyCORIS saves alpha = rank there): the file
    holds `w1` times alpha / rank, and reading it back gives scale 1."""

    kind = "lokr"
    algo = "lokr"
    params = {name: name for name in LOKR}
    rank_tensors = ("lokr_w2_b", "lokr_w1_b")
    marks = (".lokr_w1", ".lokr_w1_a")

    def peft_config(self, targets, ranks, alphas):
        from peft import LoKrConfig

        s = self.settings
        return LoKrConfig(r=self.rank, alpha=self.alpha, target_modules=targets,
                          rank_pattern=ranks, alpha_pattern=alphas,
                          decompose_both=s.decompose_both, decompose_factor=s.factor,
                          use_effective_conv2d=s.use_tucker)  # fmt: skip

    @classmethod
    def loading_config(cls, targets, ranks, alphas, modules):
        from peft import LoKrConfig

        return LoKrConfig(r=1, alpha=1, target_modules=targets, rank_pattern=ranks,
                          alpha_pattern=alphas)  # fmt: skip

    def network_args(self) -> dict[str, str]:
        s = self.settings
        return super().network_args() | {
            "factor": str(s.factor),
            "decompose_both": str(s.decompose_both),
            "use_tucker": str(s.use_tucker),
        }

    def module_to_kohya(self, params, rank: int, alpha: float) -> dict:
        if "lokr_w1" in params and "lokr_w2" in params:  # both full: scale 1 for readers
            params = params | {"lokr_w1": params["lokr_w1"] * (alpha / rank)}
            alpha = float(rank)
        return super().module_to_kohya(params, rank, alpha)

    @classmethod
    def module_from_kohya(cls, tensors):
        params, rank, alpha = super().module_from_kohya(tensors)
        if "lokr_w1" in params and "lokr_w2" in params:
            rank, alpha = 1, 1.0
        return params, rank, alpha
