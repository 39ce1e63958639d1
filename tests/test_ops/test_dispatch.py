"""Every CPU kernel of sec_mm.ops.dispatch against the plain PyTorch op it stands for."""
import pytest
import torch

from sec_mm.models.layers import RotaryEmbedding2d
from sec_mm.ops import apply_rope, dispatch, sec_attention
from sec_mm.ops.cpu import complex_rope, inplace_add, row_argsort, row_gather


def _kernel_and_plain(fn, name, *inputs):
    """Outputs and input gradients of ``fn`` with the kernel of ``name`` (all kernels for
    None) and with its plain op forced."""
    results = []
    for plain in (False, True):
        leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
        with dispatch.plain_ops(*[name] if name else []) if plain else torch.enable_grad():
            out = fn(*leaves)
            outs = out if isinstance(out, tuple) else (out, )
        grad_outs = [torch.randn(o.shape, dtype=o.dtype, generator=torch.Generator()
                                 .manual_seed(i)) for i, o in enumerate(outs)]
        wrt = [t for t in leaves if t.requires_grad]
        grads = torch.autograd.grad(outs, wrt, grad_outs) if wrt else ()
        results.append((outs, grads))
    return results


def _assert_same(kernel, plain, **tolerances):
    for got, expected in zip(kernel[0] + kernel[1], plain[0] + plain[1]):
        torch.testing.assert_close(got, expected, **tolerances)


def test_plain_ops_turns_kernels_off_and_back_on():
    assert all(dispatch.uses_kernel(name) for name in dispatch.PRIMITIVES)
    with dispatch.plain_ops('rows'):
        assert not dispatch.uses_kernel('rows') and dispatch.uses_kernel('attention')
        with dispatch.plain_ops():
            assert not any(dispatch.uses_kernel(name) for name in dispatch.PRIMITIVES)
        assert not dispatch.uses_kernel('rows') and dispatch.uses_kernel('attention')
    assert dispatch.uses_kernel('rows')
    with pytest.raises(ValueError, match=r"unknown primitive names \['sort'\]"):
        with dispatch.plain_ops('sort'):
            pass


@pytest.mark.parametrize('shape', [(3, 4, 50), (8, 2, 3136), (2, 1), (1, 0)])
def test_radix_argsort_equals_plain_sort(shape):
    values = torch.randint(-20, 20, shape).float()  # ties: stability decides
    assert row_argsort.supports(values)
    kernel = dispatch.stable_argsort(values)
    with dispatch.plain_ops('stable_argsort'):
        plain = dispatch.stable_argsort(values)
    assert torch.equal(kernel, plain)
    assert not row_argsort.supports(values.double())
    assert torch.equal(dispatch.stable_argsort(values.double()), plain)


def _strided_qkv(batch=2, length=20, heads=3, dims=4):
    """(B, heads, L, d) views of a token-major (B, L, 3, heads, d) tensor, as layers pass."""
    packed = torch.randn(batch, length, 3, heads, dims, dtype=torch.float64)
    return packed, [t.transpose(1, 2) for t in packed.unbind(2)]


def test_row_gather_equals_plain_gather():
    packed, (_, k, _) = _strided_qkv()
    assert row_gather.supports(k) and not k.is_contiguous()
    index = torch.randint(0, 20, (2, 3, 31))  # repeats and left-out tokens
    kernel, plain = _kernel_and_plain(
        lambda p: dispatch.gather_rows(p[:, :, 1].transpose(1, 2), index), 'rows',
        packed.requires_grad_())
    _assert_same(kernel, plain, rtol=0, atol=1e-15)
    assert kernel[0][0].is_contiguous() and plain[0][0].is_contiguous()


def test_row_permutation_and_restore_equal_plain_ops_with_their_layouts():
    packed, (q, _, _) = _strided_qkv()
    order = torch.stack([torch.randperm(20) for _ in range(6)]).view(2, 3, 20)
    inverse = dispatch.inverse_permutation(order)

    def permute_then_restore(p):
        sorted_q = dispatch.permute_rows(p[:, :, 0].transpose(1, 2), order, inverse)
        return sorted_q, dispatch.scatter_rows(sorted_q * 2, order)

    kernel, plain = _kernel_and_plain(permute_then_restore, 'rows', packed.requires_grad_())
    _assert_same(kernel, plain, rtol=0, atol=0)
    for (sorted_q, restored), _ in (kernel, plain):
        assert sorted_q.is_contiguous()
        assert restored.transpose(1, 2).is_contiguous()  # token-major: head merge is free
        torch.testing.assert_close(restored, 2 * q)


def test_row_ops_take_empty_batches_on_both_paths():
    x = torch.randn(0, 2, 5, 4, requires_grad=True)
    order = torch.zeros(0, 2, 5, dtype=torch.long)
    for plain in (False, True):
        with dispatch.plain_ops('rows') if plain else torch.enable_grad():
            outs = [dispatch.gather_rows(x, order), dispatch.permute_rows(x, order),
                    dispatch.scatter_rows(x, order)]
        assert all(out.shape == (0, 2, 5, 4) for out in outs)
        sum(out.sum() for out in outs).backward()


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_complex_rope_equals_plain_rope(dtype):
    sin, cos = (t.to(dtype) for t in RotaryEmbedding2d(8)(3, 5))
    projection = torch.randn(2, 96, 3, 5, dtype=dtype)
    qkv = projection.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(
        2, 15, 3, 4, 8)
    assert complex_rope.supports(qkv, sin, cos)
    kernel, plain = _kernel_and_plain(lambda t: dispatch.split_qkv_with_rope(t, sin, cos),
                                      'split_qkv_with_rope', qkv.requires_grad_())
    tolerance = dict(atol=1e-6, rtol=1e-6) if dtype == torch.float32 else {}
    _assert_same(kernel, plain, **tolerance)
    q, k, v = plain[0]
    torch.testing.assert_close(q, apply_rope(qkv[:, :, 0].transpose(1, 2), sin, cos))
    assert torch.equal(v, qkv[:, :, 2])
    # Same shapes on both paths; the kernel's are dense.
    assert all(a.shape == b.shape and a.is_contiguous() for a, b in zip(kernel[0], plain[0]))


def test_add_into_fresh_writes_in_place_with_plain_values_and_gradients():
    fresh, other = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert inplace_add.supports(fresh, other)
    out = dispatch.add_into_fresh(fresh, other)
    assert out.data_ptr() == fresh.data_ptr()
    with dispatch.plain_ops('add_into_fresh'):
        assert dispatch.add_into_fresh(fresh, other).data_ptr() != fresh.data_ptr()
    # As the layers use it: into a conv's output, gradients unchanged.
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    x = torch.randn(2, 3, 4, 4)
    kernel, plain = _kernel_and_plain(
        lambda x, o: dispatch.add_into_fresh(conv(x), o), 'add_into_fresh',
        x.requires_grad_(), other.requires_grad_())
    _assert_same(kernel, plain, rtol=0, atol=0)
    # A sum of another dtype or shape is never written in place.
    half = fresh.bfloat16()
    assert not inplace_add.supports(half, other)
    assert dispatch.add_into_fresh(half, other).dtype == torch.float32
    assert not inplace_add.supports(fresh[:, :1], other)
    assert dispatch.add_into_fresh(fresh[:, :1], other).shape == (2, 3, 4, 4)


def test_tracing_sees_the_plain_ops():
    def step(values, x, q):
        order = dispatch.stable_argsort(values)
        return dispatch.attention(q, q, dispatch.permute_rows(x, order))

    values, x = torch.randn(1, 2, 9), torch.randn(1, 2, 9, 4)
    graph = str(torch.jit.trace(step, (values, x, x)).graph)
    assert 'aten::sort' in graph and 'aten::gather' in graph
    assert 'aten::scaled_dot_product_attention' in graph and 'PythonOp' not in graph


def test_sec_attention_on_plain_ops_equals_the_kernels():
    packed, (q, k, v) = _strided_qkv(length=50)
    kernel, plain = _kernel_and_plain(
        lambda p: sec_attention(*(t.transpose(1, 2) for t in p.unbind(2)), num_clusters=4),
        None, packed.requires_grad_())
    _assert_same(kernel, plain)
    assert kernel[0][0].transpose(1, 2).is_contiguous()
    assert plain[0][0].transpose(1, 2).is_contiguous()


def test_plain_permutation_gradient_is_a_gather_not_a_scatter_add():
    """The plain path (GPUs) moves a permutation's gradient rows back with a gather."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 17, 8, requires_grad=True)
    order = torch.rand(2, 3, 17).argsort(dim=-1)
    grad = torch.randn(2, 3, 17, 8)
    expected, = torch.autograd.grad(x.gather(2, order[..., None].expand(-1, -1, -1, 8)), x,
                                    grad)
    with dispatch.plain_ops('rows'):
        out = dispatch.permute_rows(x, order)
        with torch.profiler.profile() as profile:
            ours, = torch.autograd.grad(out, x, grad)
    assert torch.equal(out, x.detach().gather(2, order[..., None].expand(-1, -1, -1, 8)))
    assert torch.equal(ours, expected)
    names = {event.name for event in profile.events()}
    assert 'aten::gather' in names
    assert not any(name.startswith('aten::scatter_add') for name in names)
