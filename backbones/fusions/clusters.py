"""The fusion of the ID embedding with the item's stage-1 k-means group (the paper's CI variant)."""

import torch
from torch import nn

from tslrec.backbones.item_embedding import Fusion, IDEmbedding, register_fusion
from tslrec.core.errors import InputError


@register_fusion("ci")
class ClusterFusion(Fusion):
    """e = e_id + E_c[c_i], c_i the item's group (the padding row stays 0)."""

    reads_clusters = True

    def __init__(self, num_items: int, hidden: int, cfg: object, llm_table: object, clusters: torch.Tensor | None):
        super().__init__()
        self.num_items = num_items
        self.id = IDEmbedding(num_items, hidden)
        if clusters is None or clusters.shape != (num_items + 1,):
            raise InputError(
                f"fusion 'ci': needs one cluster index per item ({num_items + 1} rows with padding); "
                "pass the stage-1 group map"
            )
        self.register_buffer("clusters", clusters.long().clamp(min=0))  # [N+1]
        self.cluster_emb = nn.Embedding(int(clusters.max()) + 1, hidden)
        nn.init.normal_(self.cluster_emb.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # [...] -> [..., H]
        return self.id(ids) + self.cluster_emb(self.clusters[ids]) * (ids > 0).unsqueeze(-1)
