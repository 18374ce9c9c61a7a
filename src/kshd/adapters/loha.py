"""LoHa (peft's LoHa, LyCORIS' `loha`): a layer's delta is the Hadamard product of two low-rank
products, `(w1_a @ w1_b) * (w2_a @ w2_b) * alpha / rank`; saved only as the kohya/LyCORIS file
(`hada_w1_a` ... `hada_t2`, `.alpha`), which diffusers has no loader for."""

from __future__ import annotations

from kshd.adapters.peft_kohya import PeftKohyaAdapter

HADA = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")


class LohaAdapter(PeftKohyaAdapter):
    """peft and LyCORIS name and shape LoHa's tensors alike (a Tucker conv's `hada_t1`:
    rank x rank x kernel, `hada_w1_a`: rank x out), so the file holds them as they are."""

    kind = "loha"
    algo = "loha"
    params = {name: name for name in HADA}
    rank_tensors = ("hada_w1_b",)
    marks = (".hada_w1_a",)

    def peft_config(self, targets, ranks, alphas):
        from peft import LoHaConfig

        return LoHaConfig(r=self.rank, alpha=self.alpha, target_modules=targets,
                          rank_pattern=ranks, alpha_pattern=alphas,
                          use_effective_conv2d=self.settings.use_tucker)  # fmt: skip

    @classmethod
    def loading_config(cls, targets, ranks, alphas, modules):
        from peft import LoHaConfig

        tucker = any("hada_t1" in m for m in modules.values())
        return LoHaConfig(r=1, alpha=1, target_modules=targets, rank_pattern=ranks,
                          alpha_pattern=alphas, use_effective_conv2d=tucker)  # fmt: skip

    def network_args(self) -> dict[str, str]:
        return super().network_args() | {"use_tucker": str(self.settings.use_tucker)}
