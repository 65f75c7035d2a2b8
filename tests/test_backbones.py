"""Smoke and behaviour tests for every backbone and every fusion through the item-embedding seam."""

import pytest
import torch

from tslrec.backbones.base import BackboneConfig, SequentialRecommender
from tslrec.backbones.item_embedding import FUSIONS, FusionConfig, build_item_embedding, register_fusion
from tslrec.backbones.registry import BACKBONES, build_backbone
from tslrec.core.errors import InputError

N = 12


def make(name: str, fusion: str = "base", **kw):
    torch.manual_seed(0)
    cfg = BackboneConfig(num_items=N, hidden=16, max_len=10, dropout=0.0, **kw)
    llm = torch.randn(N + 1, 24)
    clusters = torch.arange(N + 1) % 3
    return build_backbone(name, cfg, FusionConfig(kind=fusion), llm_table=llm, clusters=clusters)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_contract_shapes_and_causality(name):
    model = make(name).eval()
    seq = torch.tensor([[1, 2, 3, 4, 0, 0], [5, 6, 7, 8, 9, 10]])
    lengths = torch.tensor([4, 6])
    h = model(seq, lengths)
    assert h.shape == (2, 16)
    assert model.score(h).shape == (2, N + 1)
    # changing a later item never changes an earlier position's state
    states = model.encode(seq)
    changed = seq.clone()
    changed[:, 3] = 11
    states2 = model.encode(changed)
    assert torch.allclose(states[:, :3], states2[:, :3], atol=1e-5)
    assert not torch.allclose(states[:, 3:], states2[:, 3:], atol=1e-5)
    # right padding does not change the user state
    h_short = model(seq[:1, :4], lengths[:1])
    assert torch.allclose(h[:1], h_short, atol=1e-5)
    # the user state is the encoder's state at the last real item (SASRec computes it alone)
    assert torch.allclose(h, states[torch.arange(2), lengths - 1], atol=1e-5)


def test_fast_dropout_drops_at_its_rate_and_keeps_the_mean():
    from tslrec.backbones.dropout import FastDropout

    torch.manual_seed(0)
    x = torch.ones(300_001)
    y = FastDropout(0.2).train()(x)
    assert abs(float((y == 0).float().mean()) - 0.2) < 0.005  # a biased bit would give 0.15 or 0.25
    assert abs(float(y.mean()) - 1.0) < 0.01
    assert torch.equal(FastDropout(0.2).eval()(x), x)


@pytest.mark.parametrize("name", list(BACKBONES))
@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_training_steps_reduce_the_loss(name, loss):
    model = make(name)
    inputs = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 0, 0]] * 4)
    targets = torch.tensor([[2, 3, 4, 5, 6], [7, 8, 9, 0, 0]] * 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    first = model.loss(inputs, targets, loss, gen).item()
    for _ in range(60):
        opt.zero_grad()
        model.loss(inputs, targets, loss, gen).backward()
        opt.step()
    assert model.loss(inputs, targets, loss, torch.Generator().manual_seed(0)).item() < 0.7 * first


@pytest.mark.parametrize("name", list(BACKBONES))
@pytest.mark.parametrize("fusion", list(FUSIONS))
def test_every_backbone_accepts_every_fusion(name, fusion):
    model = make(name, fusion)
    table = model.item_embedding.table()
    assert table.shape == (N + 1, 16)
    assert torch.all(table[0] == 0) or fusion in ("ci",)  # padding row stays zero where the fusion defines it
    seq = torch.tensor([[3, 4, 5]])
    model.loss(seq, torch.tensor([[4, 5, 6]])).backward()
    trained = [n for n, p in model.item_embedding.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    if FUSIONS[fusion].reads_llm_table:
        assert any(n.startswith("proj") for n in trained)
        assert "llm_table" not in dict(model.item_embedding.named_parameters())  # frozen by default
    if FUSIONS[fusion].reads_clusters:
        assert "cluster_emb.weight" in trained


def test_gate_matched_starts_the_llm_side_at_the_id_tables_scale():
    """gate's projected LLM vectors start far larger than the ID embeddings; gate-matched's start at their scale,
    in the model training builds (the backbone's own init must not redraw the projection)."""
    torch.manual_seed(0)
    llm = torch.randn(N + 1, 64) * 3.0 + 5.0  # LLM hidden states: large and off-centre
    scales = {}
    for kind in ("gate", "gate-matched"):
        cfg = BackboneConfig(num_items=N, hidden=16, max_len=8)
        emb = build_backbone("sasrec", cfg, FusionConfig(kind), llm_table=llm).item_embedding
        with torch.no_grad():
            e_llm = emb.proj(emb.llm_table[1:])  # [N, H]
            scales[kind] = float(e_llm.std() / emb.id.table()[1:].std())
    assert scales["gate"] > 20 and 0.5 < scales["gate-matched"] < 2, scales


def test_gate_input_scores_against_the_id_table_only():
    torch.manual_seed(0)
    emb = build_item_embedding(N, 16, FusionConfig("gate-input"), llm_table=torch.randn(N + 1, 8))
    ids = torch.arange(N + 1)
    assert torch.equal(emb.table(), emb.id.table())  # scoring: IDs
    assert not torch.allclose(emb(ids), emb.id(ids))  # inputs: the gated fusion


def test_llm_table_can_be_finetuned():
    torch.manual_seed(0)
    cfg = BackboneConfig(num_items=N, hidden=16, max_len=10)
    model = build_backbone(
        "sasrec", cfg, FusionConfig("gate", finetune_llm_table=True), llm_table=torch.randn(N + 1, 8)
    )
    assert "item_embedding.llm_table" in dict(model.named_parameters())


def test_unknown_backbone_and_fusion_and_mismatched_table():
    cfg = BackboneConfig(num_items=N)
    with pytest.raises(InputError, match="unknown backbone 'bert'"):
        build_backbone("bert", cfg)
    with pytest.raises(InputError, match=r"^FusionConfig.kind: unknown fusion 'mix'; choose one of base, ci, gate, "):
        build_backbone("sasrec", cfg, FusionConfig("mix"))
    with pytest.raises(InputError, match="13 rows"):
        build_backbone("sasrec", cfg, FusionConfig("gate"), llm_table=torch.randn(N, 8))


def test_a_fusion_registered_in_one_class_is_built_and_accepted_by_train_and_ablate():
    """Adding a fusion is one registered class: the seam builds it and --fusion, config files and --fusions
    accept it, with nothing else edited."""
    import argparse

    from tslrec.backbones.fusions.llm_table import LLMTableFusion
    from tslrec.core.settings import add_arguments, from_mapping
    from tslrec.pipelines.ablate_job import AblateJob
    from tslrec.pipelines.ablation_grid import grid_variants
    from tslrec.pipelines.train_job import TrainJob

    @register_fusion("mean")
    class Mean(LLMTableFusion):
        """e = (e_id + e_llm) / 2."""

        def forward(self, ids: torch.Tensor) -> torch.Tensor:  # [...] -> [..., H]
            return (self.id(ids) + self.e_llm(ids)) / 2

    try:
        emb = make("sasrec", "mean").item_embedding
        assert isinstance(emb, Mean) and emb.table().shape == (N + 1, 16) and "llm_table" in dict(emb.named_buffers())
        parser = argparse.ArgumentParser()
        add_arguments(parser, TrainJob())
        assert parser.parse_args(["--dataset", "ml-100k", "--fusion", "mean"]).fusion == "mean"
        assert from_mapping(TrainJob(), {"fusion": "mean"}, "c.yaml").fusion == "mean"
        assert AblateJob(fusions=["base", "mean"]).fusions == ["base", "mean"]
        assert grid_variants(["base", "mean"], ["tuned", "stage0"]) == [
            ("base", None),
            ("mean", "tuned"),
            ("mean", "stage0"),
        ]
    finally:
        del FUSIONS["mean"]
    with pytest.raises(InputError, match="unknown fusion 'mean'"):
        make("sasrec", "mean")
    with pytest.raises(InputError, match="'mean'; use one of base, ci"):
        from_mapping(TrainJob(), {"fusion": "mean"}, "c.yaml")


@pytest.mark.parametrize("fusion", ["base", "gate"])  # gate: the padding id's fused embedding is not zero
def test_caser_matmul_encode_is_the_conv2d_function(fusion):
    """Caser computes its convolutions as matrix products over the sequence; same function as its Conv2d layers,
    gradients included, at every position (the first W-1 see zero-padded windows) and for every filter height."""
    torch.manual_seed(0)
    cfg = BackboneConfig(num_items=N, hidden=16, max_len=10, dropout=0.0, caser_window=4, caser_h_filters=3)
    model = build_backbone("caser", cfg, FusionConfig(kind=fusion), llm_table=torch.randn(N + 1, 24))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()  # biases too: a mixed-up filter, row or bias shows
    seq = torch.tensor([[1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 0, 0, 0, 0]])
    fast, slow = model.encode(seq), model.conv2d_reference(seq)
    assert fast.shape == slow.shape == (2, 7, 16)
    assert torch.allclose(fast, slow, rtol=1e-4, atol=1e-4)
    grads = []
    for out in (fast, slow):
        model.zero_grad()
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward(retain_graph=True)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any("horizontal.3" in n for n in grads[0])
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], rtol=1e-3, atol=1e-3), n


def test_gru4rec_builds_the_layers_it_is_given_and_records_only_what_it_reads():
    """--layers sets SASRec's and FMLP-Rec's blocks; GRU4Rec stacks --gru-layers GRUs (RecBole's 1 by default), and a
    GRU4Rec record does not carry a num_layers it never read."""
    from dataclasses import asdict

    from tslrec.backbones.registry import settings_read_by

    assert make("gru4rec").gru.num_layers == 1
    assert make("gru4rec", gru_layers=3).gru.num_layers == 3
    assert len(make("sasrec", num_layers=3).blocks) == 3
    read = settings_read_by(asdict(BackboneConfig()), ["GRU4Rec"])
    assert "gru_layers" in read and "num_layers" not in read
    assert "num_layers" in settings_read_by(asdict(BackboneConfig()), ["SASRec"])


@pytest.mark.parametrize("name", list(BACKBONES))
def test_a_backbone_reads_no_setting_beyond_its_reads(name):
    """`reads` decides what a run records and which flags it refuses: a backbone that read a field it does not name
    would train on a setting its record leaves out. Every other field, changed, must leave the model unchanged."""
    from dataclasses import fields

    cls = BACKBONES[name]
    changed = {"num_layers": 3, "gru_layers": 2, "num_heads": 4, "attn_dropout": 0.5, "caser_window": 4}
    changed |= {"caser_h_filters": 3, "caser_v_filters": 2}
    assert {f.name for f in fields(BackboneConfig)} <= set(changed) | set(SequentialRecommender.reads)
    seq = torch.tensor([[3, 1, 4, 1, 5, 0]])
    ref = make(name).eval()
    for field_name in set(changed) - set(cls.reads):
        other = make(name, **{field_name: changed[field_name]}).eval()
        assert [p.shape for p in other.parameters()] == [p.shape for p in ref.parameters()], field_name
        assert torch.equal(other.encode(seq), ref.encode(seq)), field_name


def test_heads_that_do_not_divide_hidden_bind_sasrec_only():
    """hidden=9 with 2 heads was refused for every backbone, naming a setting only SASRec reads."""
    from tslrec.backbones.registry import require_read_by

    odd = BackboneConfig(num_items=5, hidden=9, max_len=6)
    require_read_by(odd, ["GRU4Rec", "Caser", "FMLPRec"])
    assert build_backbone("gru4rec", odd).encode(torch.tensor([[1, 2, 0]])).shape == (1, 3, 9)
    with pytest.raises(InputError, match="num_heads=2: SASRec's heads must divide hidden=9"):
        require_read_by(odd, ["SASRec", "GRU4Rec"])
