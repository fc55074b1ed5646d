"""Graph builder: shape/dtype rules, naming, printing."""

import pytest

from rocmforge.ir.graph import Graph
from rocmforge.ir.ops import IRError, Op


def small_graph():
    g = Graph("t")
    tok = g.input("inp_tokens", (3,), "i32")
    emb = g.weight("token_embd.weight", (10, 8), "q8_0")
    x = g.get_rows(emb, tok, "inp_embd")
    w = g.weight("blk.0.attn_q.weight", (4, 8), "f16")
    y = g.mul_mat(w, x, "blk.0.attn_q")
    g.output(g.argmax(y, "argmax"))
    return g


def test_shapes_and_dtypes_follow_the_rules():
    g = small_graph()
    assert g["inp_embd"].shape == (3, 8) and g["inp_embd"].dtype == "f32"
    assert g["blk.0.attn_q"].shape == (3, 4)
    assert g["argmax"].shape == (3,) and g["argmax"].dtype == "i32"
    assert [t.op for t in g.ops()] == [Op.GET_ROWS, Op.MUL_MAT, Op.ARGMAX]
    assert g["inp_embd"].src == (g["token_embd.weight"], g["inp_tokens"])


def test_table_lists_op_name_shape_dtype_sources():
    text = small_graph().table()
    lines = text.splitlines()
    assert lines[0].split() == ["#", "op", "name", "shape", "dtype", "sources"]
    row = next(ln for ln in lines if "blk.0.attn_q " in ln and "MUL_MAT" in ln)
    assert "3x4" in row and "f32" in row and "blk.0.attn_q.weight, inp_embd" in row
    assert any(ln.split()[1] == "WEIGHT" and "q8_0" in ln for ln in lines)


@pytest.mark.parametrize("build, msg", [
    (lambda g, x: g.mul_mat(g.weight("w", (4, 7), "f32"), x, "bad"), "inner sizes"),
    (lambda g, x: g.rope(g.reshape(x, (3, 2, 4), "r"), g.input("p", (2,), "i32"), "bad", n_dims=4,
                         neox=False, base=1e4), "pos must be"),
    (lambda g, x: g.add(x, g.input("b", (5,)), "bad"), "does not broadcast"),
    (lambda g, x: g.reshape(x, (5, 5), "bad"), "changes the size"),
    (lambda g, x: g.set_rows(g.state("c", (9, 8)), x, g.input("i", (3,), "f32"), "bad"), "idx must be i32"),
    (lambda g, x: g.add(x, x, "inp"), "duplicate node name"),
    (lambda g, x: g.quantize_x8(x, "bad"), "whole blocks of 32"),
    (lambda g, x: g.mul_mat(g.weight("w", (4, 8), "q8_0"), x, "bad", x), "xq must be i32"),
])
def test_bad_graphs_raise_ir_errors(build, msg):
    g = Graph()
    x = g.input("inp", (3, 8))
    with pytest.raises(IRError, match=msg):
        build(g, x)


def test_nodes_of_another_graph_are_rejected():
    g1, g2 = Graph(), Graph()
    a = g1.input("a", (2,))
    g2.input("a", (2,))
    with pytest.raises(IRError, match="not a node of this graph"):
        g2.scale(a, 2.0, "s")


def test_quantize_x8_and_mul_mat_reading_it():
    g = Graph()
    x = g.input("x", (2, 3, 64))
    xq = g.quantize_x8(x, "xq")
    assert (xq.shape, xq.dtype) == ((2, 3, 20), "i32")
    y = g.mul_mat(g.weight("w", (5, 64), "q4_0"), x, "y", xq)
    assert (y.shape, y.dtype, len(y.src)) == ((2, 3, 5), "f32", 3)
