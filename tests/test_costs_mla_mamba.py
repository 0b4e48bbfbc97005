"""MLA and Mamba cost rules against hand derivations, on tests/data/toy2.arch.

MLA: H = 2 heads, q_lora_rank 4, C = kv_lora_rank 4, Dn = 2, Dr = 2, Dv = 2, on hidden 8.
Mamba: Di = d_inner 16, N = d_state 2, K = d_conv 3, R = dt_rank 2. Batch b = 2, seq s = 5:
prefill n = 10 rows, Lq = Lk = 5; decode n = 2 rows, Lq = 1, Lk = 6. Prefill's MLA runs
expanded (per-head keys and values up-projected from the latent), decode's absorbed. Each tuple is
(operations, elements read by class, elements written by class, parameters), derived beside
it from the rules' docstrings in costdsl/graph/costs.py.
"""
import pytest

import costdsl

from conftest import DATA
from test_costs import assert_hand_derivations, measured

PREFILL = {
    "emb": (0, {"weight": 80}, {"act": 80}, 80),
    "layers.n": (320, {"act": 80, "weight": 8}, {"act": 80}, 8),          # 4 x 10 x 8
    # q_a 8 -> 4: 2 n 8 4 = 640; q_norm over 4: 4 n 4 = 160; q 4 -> H (Dn + Dr) = 8: 640
    "layers.a.q_a": (640, {"act": 80, "weight": 32}, {"act": 40}, 32),
    "layers.a.q_norm": (160, {"act": 40, "weight": 4}, {"act": 40}, 4),
    "layers.a.q": (640, {"act": 40, "weight": 32}, {"act": 80}, 32),
    # prefill runs expanded (a dense MLA): absorb up-projects the context's latents, L = b s
    # = 10 rows, by both halves of kv_b_proj: 2 L C H (Dn + Dv) = 640, + RoPE 3 n H Dr = 120;
    # reads q 80 + cos/sin 2 n Dr = 40, the latent L C = 40, W_UK H Dn C = 16 and W_UV
    # H C Dv = 16; writes the query n H (Dn + Dr) = 80 and the keys and values
    # L H (Dn + Dr + Dv) = 120
    "layers.a.absorb": (760, {"act": 120, "kv": 40, "weight": 32}, {"act": 200}, 16),
    # kv_a 8 -> C + Dr = 6: 2 n 8 6 = 960
    "layers.a.kv_a": (960, {"act": 80, "weight": 48}, {"act": 60}, 48),
    # cache: 4 n C + 3 n Dr = 160 + 60; reads 60 + cos/sin 40, gain 4; writes 60 to the cache
    "layers.a.cache": (220, {"act": 100, "weight": 4}, {"kv": 60}, 4),
    # qk over the expanded keys, Dn + Dr = 4 dims, one per head: 2 b H Lq Lk 4 = 800;
    # Q b Lq H 4 = 80, K b Lk H 4 = 80 (activations); scores b H Lq Lk = 100
    "layers.a.qk": (800, {"act": 160}, {"act": 100}, 0),
    "layers.a.softmax": (500, {"act": 100}, {"act": 100}, 0),
    # xV over the expanded values, Dv = 2 dims: 2 b H Lq Lk 2 = 400; reads P 100 and
    # V b Lk H 2 = 40; writes b Lq H Dv = 40
    "layers.a.sv": (400, {"act": 140}, {"act": 40}, 0),
    # v_up: the output is already n H Dv = 40 wide: read and written, no arithmetic
    "layers.a.v_up": (0, {"act": 40}, {"act": 40}, 16),
    "layers.o": (640, {"act": 40, "weight": 32}, {"act": 80}, 32),
    "layers.h": (80, {"act": 160}, {"act": 80}, 0),
    # in_proj 8 -> 2 Di = 32: 2 n 8 32 = 5120
    "layers.m.in_proj": (5120, {"act": 80, "weight": 256}, {"act": 320}, 256),
    # conv: n Di (2K + 5) = 1760; reads the x half n Di = 160, weights Di K + Di = 64; writes
    # n Di and the final conv state b Di (K - 1) = 64
    "layers.m.conv": (1760, {"act": 160, "weight": 64}, {"act": 160, "kv": 64}, 64),
    "layers.m.x_proj": (1920, {"act": 160, "weight": 96}, {"act": 60}, 96),   # 16 -> 6
    # dt_proj reads the first R = 2 features: 2 n 2 16 + n 16 (bias) = 800
    "layers.m.dt_proj": (800, {"act": 20, "weight": 48}, {"act": 160}, 48),
    # scan: n Di (8N + 10) = 4160; reads u, dt, z (n Di each) and B, C (n 2N): 520; A Di N and
    # D Di: 48; writes y n Di and the final state b Di N = 64
    "layers.m.scan": (4160, {"act": 520, "weight": 48}, {"act": 160, "kv": 64}, 48),
    "layers.m.out_proj": (2560, {"act": 160, "weight": 128}, {"act": 80}, 128),
    "layers.out": (80, {"act": 160}, {"act": 80}, 0),
    "head": (320, {"act": 16, "weight": 80}, {"act": 20}, 80),
}

DECODE = {
    "emb": (0, {"weight": 16}, {"act": 16}, 80),
    "layers.n": (64, {"act": 16, "weight": 8}, {"act": 16}, 8),
    "layers.a.q_a": (128, {"act": 16, "weight": 32}, {"act": 8}, 32),
    "layers.a.q_norm": (32, {"act": 8, "weight": 4}, {"act": 8}, 4),
    "layers.a.q": (128, {"act": 8, "weight": 32}, {"act": 16}, 32),
    "layers.a.absorb": (88, {"act": 24, "weight": 16}, {"act": 24}, 16),
    "layers.a.kv_a": (192, {"act": 16, "weight": 48}, {"act": 12}, 48),
    "layers.a.cache": (44, {"act": 20, "weight": 4}, {"kv": 12}, 4),
    # Lq = 1, Lk = 6: 2 b H 6 6 = 288; Q 2 H 6 = 24; latent b 6 6 = 72; scores b H 6 = 24
    "layers.a.qk": (288, {"act": 24, "kv": 72}, {"act": 24}, 0),
    "layers.a.softmax": (120, {"act": 24}, {"act": 24}, 0),
    "layers.a.sv": (192, {"act": 24, "kv": 48}, {"act": 16}, 0),
    "layers.a.v_up": (64, {"act": 16, "weight": 16}, {"act": 8}, 16),
    "layers.o": (128, {"act": 8, "weight": 32}, {"act": 16}, 32),
    "layers.h": (16, {"act": 32}, {"act": 16}, 0),
    "layers.m.in_proj": (1024, {"act": 16, "weight": 256}, {"act": 64}, 256),
    # a decode step reads and writes the conv state b Di (K - 1) = 64 and the SSM state
    # b Di N = 64
    "layers.m.conv": (352, {"act": 32, "weight": 64, "kv": 64}, {"act": 32, "kv": 64}, 64),
    "layers.m.x_proj": (384, {"act": 32, "weight": 96}, {"act": 12}, 96),
    "layers.m.dt_proj": (160, {"act": 4, "weight": 48}, {"act": 32}, 48),
    "layers.m.scan": (832, {"act": 104, "weight": 48, "kv": 64}, {"act": 32, "kv": 64}, 48),
    "layers.m.out_proj": (512, {"act": 32, "weight": 128}, {"act": 16}, 128),
    "layers.out": (16, {"act": 32}, {"act": 16}, 0),
    "head": (320, {"act": 16, "weight": 80}, {"act": 20}, 80),
}


@pytest.mark.parametrize("stage,expected", [("prefill", PREFILL), ("decode", DECODE)])
def test_every_op_matches_its_hand_derivation(stage, expected):
    assert_hand_derivations(measured(stage, "toy2.arch"), expected)


def test_toy2_parameters():
    # per layer: norm 8 + MLA 32 + 4 + 32 + 16 + 48 + 4 + 16 + o 32 + Mamba 256 + 64 + 96
    # + 48 + 48 + 128 = 832; 2 layers, embedding 80, head 80
    assert costdsl.load(DATA / "toy2.arch").params() == 2 * 832 + 160
