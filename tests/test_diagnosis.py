"""diagnosis.diagnose: each symptom is found where it is planted and not where it is absent."""
from pathlib import Path

import pytest
import torch
from torch import nn

from unstable_gradients.diagnosis import SYMPTOMS, Diagnosis, Thresholds, _findings, diagnose, symptom_table
from unstable_gradients.experiments import practice_exp as pe

ROOT = Path(__file__).resolve().parents[1]


def mlp(act: type[nn.Module], gain: float, depth: int = 8, width: int = 64, bias: float = 0.0, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers, n = [], 32
    for _ in range(depth):
        lin = nn.Linear(n, width)
        nn.init.normal_(lin.weight, 0.0, gain / n ** 0.5)
        nn.init.constant_(lin.bias, bias)
        layers += [lin, act()]
        n = width
    return nn.Sequential(*layers, nn.Linear(n, 10))


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(128, 32, generator=g), torch.randint(0, 10, (128,), generator=g)


def test_healthy_relu_net_has_no_findings(batch):
    d = diagnose(mlp(nn.ReLU, 2 ** 0.5), *batch, lr=0.01)
    assert d.ok and d.findings == [] and "no findings" in d.report()
    assert len(d.layers) == 9 and len(d.update_ratio) == 9


def test_deep_sigmoid_net_vanishes(batch):
    d = diagnose(mlp(nn.Sigmoid, 1.0, depth=12), *batch)
    assert d.symptoms[0] == "vanishing"
    assert d.relative_grad[0] < d.relative_grad[-2]


def test_small_init_relu_signal_decays_and_large_grows(batch):
    assert "signal_decay" in diagnose(mlp(nn.ReLU, 0.3), *batch).symptoms
    assert "signal_growth" in diagnose(mlp(nn.ReLU, 4.0), *batch).symptoms


def test_dead_and_saturated_units(batch):
    d = diagnose(mlp(nn.ReLU, 2 ** 0.5, bias=-100.0), *batch)
    assert "dead_units" in d.symptoms and max(d.dead_fraction) == 1.0
    d = diagnose(mlp(nn.Tanh, 100.0, depth=3), *batch)
    assert "saturation" in d.symptoms and max(d.saturated_fraction) > 0.5
    assert all(f != f for f in d.dead_fraction)   # tanh has no dead units: nan


def test_update_ratio_flags_large_and_small_learning_rates(batch):
    net = mlp(nn.ReLU, 2 ** 0.5)
    d = diagnose(net, *batch, lr=0.01)
    assert diagnose(net, *batch, lr=1e3).symptoms == ["update_too_large"]
    assert diagnose(net, *batch, lr=1e-9).symptoms == ["update_too_small"]
    assert d.update_ratio == pytest.approx([0.01 * r for r in d.relative_grad])


def test_relative_grad_matches_manual(batch):
    net = mlp(nn.ReLU, 2 ** 0.5, depth=2)
    d = diagnose(net, *batch)
    lin = net[0]
    assert d.relative_grad[0] == pytest.approx(float(lin.weight.grad.norm() / lin.weight.detach().norm()), rel=1e-5)
    assert d.signal_rms[0] == pytest.approx(float(lin(batch[0]).detach().pow(2).mean().sqrt()), rel=1e-5)


def test_exploding_is_the_mirror_of_vanishing():
    d = Diagnosis(loss=1.0, layers=["a", "b", "c", "d"], relative_grad=[10.0, 1.0, 0.1, 0.001], weight_grad=[1.0] * 4)
    (f,) = _findings(d, nn.Linear(1, 1), torch.zeros(1, 1), Thresholds(), True)
    assert f.symptom == "exploding" and f.where == "a" and f.value == pytest.approx(1e4)
    d.relative_grad = d.relative_grad[::-1]
    (f,) = _findings(d, nn.Linear(1, 1), torch.zeros(1, 1), Thresholds(), True)
    assert f.symptom == "vanishing" and f.where == "a"
    assert _findings(d, nn.Linear(1, 1), torch.zeros(1, 1), Thresholds(layer_spread=1e5), True) == []


def test_nonfinite_names_the_layer(batch):
    net = mlp(nn.ReLU, 2 ** 0.5, depth=3)
    with torch.no_grad():
        net[2].weight[0, 0] = float("inf")
    d = diagnose(net, *batch)
    assert d.symptoms == ["nonfinite"] and d.findings[0].where == "2"


def test_lstm_time_profile_finds_vanishing_in_time_and_the_repair():
    broken, repaired = pe.diagnose_case("lstm", "broken"), pe.diagnose_case("lstm", "repaired")
    assert broken.symptoms == ["vanishing_in_time"] and len(broken.time_grad) == 50
    assert repaired.ok and repaired.time_grad[0] / repaired.time_grad[-1] > 1e-2
    assert "vanishing_in_time" in pe.diagnose_case("lstm", "broken", model=pe.lstm_model("small")).symptoms


def test_cnn_case_flags_the_learning_rate_only():
    assert pe.diagnose_case("cnn", "broken").symptoms == ["update_too_large"]
    assert pe.diagnose_case("cnn", "repaired").ok


def test_transformer_without_norm_and_with_pre_ln():
    net = pe.TokenTransformer(depth=24, norm="none", d_model=32)
    X, y = pe.reversal_task(32)
    assert "signal_growth" in diagnose(net, X, y, loss=pe.token_loss).symptoms
    torch.manual_seed(0)
    assert diagnose(pe.TokenTransformer(depth=24, norm="pre", d_model=32), X, y, loss=pe.token_loss).ok


def test_hooks_removed_weights_unchanged(batch):
    net = mlp(nn.ReLU, 2 ** 0.5, depth=2)
    before = [p.detach().clone() for p in net.parameters()]
    diagnose(net, *batch, lr=0.1)
    assert all(not m._forward_hooks for m in net.modules())
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_bad_input_is_refused(batch):
    net = mlp(nn.ReLU, 1.0, depth=1)
    with pytest.raises(TypeError, match="tensor"):
        diagnose(net, batch[0].numpy(), batch[1])
    with pytest.raises(ValueError, match="time_axis"):
        diagnose(net, *batch, time_axis=3)
    with pytest.raises(ValueError, match="lr"):
        diagnose(net, *batch, lr=-1.0)
    with pytest.raises(ValueError, match="layer_spread"):
        Thresholds(layer_spread=0)
    with pytest.raises(ValueError, match="valid"):
        pe.diagnose_case("mlp", "broken")
    with pytest.raises(ValueError, match="broken"):
        pe.diagnose_case("cnn", "fixed")
    with pytest.raises(ValueError, match="valid"):
        pe.lstm_model("zeros")
    with pytest.raises(ValueError, match="norm"):
        pe.TokenTransformer(norm="rms")


def test_symptom_table_links_resolve():
    table = symptom_table()
    assert table.count("\n") == len(SYMPTOMS) + 1
    for s in SYMPTOMS.values():
        assert s.chapters
        for c in s.chapters:
            assert any((ROOT / (c.lstrip("/") + ext)).exists() for ext in (".ipynb", ".md")), c


def test_report_elides_long_layer_lists(batch):
    d = diagnose(mlp(nn.ReLU, 2 ** 0.5, depth=20), *batch)
    short, full = d.report(max_rows=6), d.report(max_rows=None)
    assert "15 more layers" in short and len(short.splitlines()) == 2 + 7 + 1
    assert len(full.splitlines()) == 2 + 21 + 1


def test_closing_chapter_shows_the_current_symptom_table():
    import nbformat

    nb = nbformat.read(ROOT / "book" / "practice" / "01_diagnosing.ipynb", as_version=4)
    assert any(symptom_table() in c.source for c in nb.cells if c.cell_type == "markdown"), \
        "regenerate the table in book/practice/01_diagnosing.ipynb from diagnosis.symptom_table()"


def test_chapter_numbers_follow_the_parts():
    from unstable_gradients.diagnosis import chapter_number

    assert chapter_number("/book/nodes/02_activations") == "4.2"
    assert chapter_number("/book/future/05_normalisation_free") == "6.5"
    assert "{doc}`1.2 </book/causes/02_three_factors>`" in symptom_table()


def test_batch_norm_running_statistics_are_restored():
    net = pe.cnn_model("broken")
    X, y = pe.CASES["cnn"].data(64, 0)
    before = {n: b.clone() for n, b in net.named_buffers()}
    diagnose(net, X, y)
    assert all(torch.equal(before[n], b) for n, b in net.named_buffers())


class HeadFirst(nn.Module):
    """Registers its read-out before its body: diagnose must follow forward order, not registration."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(64, 10)
        self.body = mlp(nn.Sigmoid, 1.0, depth=12)[:-1]

    def forward(self, x):
        return self.head(self.body(x))


def test_layers_are_read_in_forward_order(batch):
    d = diagnose(HeadFirst(), *batch)
    assert d.layers[-1] == "head" and d.layers[0] == "body.0"
    assert d.symptoms[0] == "vanishing"


def test_a_reused_activation_is_counted_per_call(batch):
    class Reuse(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.out = nn.Linear(32, 64), nn.Linear(64, 64), nn.Linear(64, 10)
            self.relu = nn.ReLU()
            nn.init.constant_(self.b.bias, -100.0)

        def forward(self, x):
            return self.out(self.relu(self.b(self.relu(self.a(x)))))

    d = diagnose(Reuse(), *batch)
    assert d.unit_layers == ["relu", "relu#2"]
    assert d.dead_fraction[1] == 1.0 and d.dead_fraction[0] < 0.5
    assert [f.where for f in d.findings if f.symptom == "dead_units"] == ["relu#2"]


def test_one_odd_layer_does_not_decide(batch):
    net = mlp(nn.ReLU, 2 ** 0.5, depth=8)
    with torch.no_grad():
        net[8].weight.mul_(1e-6)        # one layer in the middle with a tiny weight: a huge relative gradient there
    assert "exploding" not in diagnose(net, *batch).symptoms and "vanishing" not in diagnose(net, *batch).symptoms
