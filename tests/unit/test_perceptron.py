import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchrec.modules.mlp import MLP, Perceptron

from dlrm_dist.models.perceptron import FastPerceptron, use_fast_perceptrons


@settings(max_examples=25, deadline=None)
@given(
    in_size=st.integers(1, 40),
    sizes=st.lists(st.integers(1, 96), min_size=1, max_size=3),
    batch=st.integers(1, 33),
    input_grad=st.booleans(),
    bias=st.booleans(),
    activation=st.sampled_from(["relu", "sigmoid"]),
)
def test_fast_perceptrons_compute_torchrecs_outputs_and_gradients(
    in_size, sizes, batch, input_grad, bias, activation
):
    torch.manual_seed(in_size * 1000 + batch)
    reference = MLP(in_size, sizes, bias=bias, activation=activation)
    fast = MLP(in_size, sizes, bias=bias, activation=activation)
    fast.load_state_dict(reference.state_dict())
    use_fast_perceptrons(fast)
    assert all(type(m) is FastPerceptron for m in fast.modules() if isinstance(m, Perceptron))
    assert list(fast.state_dict()) == list(reference.state_dict())
    x = torch.randn(batch, in_size)
    xs = [x.clone().requires_grad_(input_grad) for _ in range(2)]
    out_reference, out_fast = reference(xs[0]), fast(xs[1])
    assert torch.equal(out_reference, out_fast)
    weights = torch.randn_like(out_reference)
    (out_reference * weights).sum().backward()
    (out_fast * weights).sum().backward()
    for (name, p), (_, q) in zip(reference.named_parameters(), fast.named_parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=name)
    if input_grad:
        torch.testing.assert_close(xs[1].grad, xs[0].grad)


def test_a_narrow_first_layer_under_bf16_autocast_matches_torchrec():
    torch.manual_seed(0)
    reference, fast = MLP(13, [512, 16]), MLP(13, [512, 16])
    fast.load_state_dict(reference.state_dict())
    use_fast_perceptrons(fast)
    x = torch.randn(64, 13)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_reference, out_fast = reference(x), fast(x)
    assert out_fast.dtype == torch.bfloat16
    assert torch.equal(out_reference, out_fast)
    out_reference.float().sum().backward()
    out_fast.float().sum().backward()
    for p, q in zip(reference.parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad)
